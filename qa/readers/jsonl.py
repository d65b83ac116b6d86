"""JSON Lines and JSON: the bulk path, one document per record.

A record is an object with `id` and `text` and optionally `title`, `outlet`, `author`,
`published`, `url`, `language`; other fields are ignored. Exports from other tools name these
otherwise, so the text may also be `body`, `content`, `article`, `passage` or `snippet`, and the id
`_id`, `doc_id`, `docid` or `uuid`; a record with no id at all is named by its file and number
(`news-3`: the third record of news.jsonl), which changes if records are inserted above it.
`.jsonl`/`.ndjson` hold one record per line, `.json` a list of records (or one). A bad record (not
an object, no text) is reported on its own (as is one over the size limit) and the file's other
records are read. Each record carries its own bytes, so editing one record re-embeds that record only.

Usage:
    >>> docs = JsonlReader().read(Path("bulk.jsonl"), b'{"id": "a1", "text": "The treaty.", "outlet": "X"}\\n')
    >>> docs[0].key, docs[0].meta
    ('a1', {'outlet': 'X'})
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qa.readers import Document, ReadError, clean_meta
from qa.readers.text import decode

TEXT_FIELDS = ("text", "body", "content", "article", "passage", "snippet")
ID_FIELDS = ("id", "_id", "doc_id", "docid", "uuid")


@dataclass(frozen=True)
class JsonlReader:
    extensions: tuple[str, ...] = (".jsonl", ".ndjson", ".json")
    bulk: bool = True  # a file of many documents: the size limit applies to each record

    def read(self, path: Path, raw: bytes) -> list[Document]:
        text, _ = decode(raw)
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as err:
                raise ReadError(f"not valid JSON ({err})") from None
            records = data if isinstance(data, list) else [data]
            return [self._record(path, i + 1, r, json.dumps(r, sort_keys=True).encode()) for i, r in enumerate(records)]
        out = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except ValueError as err:
                    out.append(Document(text="", key=f"line {number}", error=f"not valid JSON ({err})"))
                    continue
                out.append(self._record(path, number, record, line.encode("utf-8", "surrogatepass")))
        return out

    def _record(self, path: Path, number: int, record: object, source: bytes) -> Document:
        if not isinstance(record, dict):
            return Document(text="", key=f"record {number}", error="a record must be a JSON object with 'id' and 'text'")
        key = next((record[f] for f in ID_FIELDS if f in record), None)
        if key is None:
            key = f"{path.stem}-{number}"
        elif not isinstance(key, (str, int)) or isinstance(key, bool) or not str(key).strip():
            return Document(text="", key=f"record {number}", error="the record's id is not a string or a number")
        body = next((record[f] for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
        if body is None:
            return Document(text="", key=str(key), error=f"the record has no text (a string in one of {', '.join(TEXT_FIELDS)})")
        return Document(text=body, meta=clean_meta(record), key=str(key).strip(), record=source)
