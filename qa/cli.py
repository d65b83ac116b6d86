"""The `qa` command: index, ask, serve, sources, eval, bench. Thin: the work lives in the step modules."""
from __future__ import annotations

import json
import sys
import textwrap

import click

from qa.config import Settings, SettingsError

INDEX_OPTION = click.option("--index", "index_dir", type=click.Path(file_okay=False), help="index folder (env QA_INDEX, default index/)")
SOURCES_OPTION = click.option("--sources", "sources_dir", type=click.Path(file_okay=False),
                              help="sources folder (env QA_SOURCES; default: the one the index was built from, else seeds/)")


def _settings(**overrides) -> Settings:
    try:
        return Settings.from_env(overrides)
    except SettingsError as err:
        _fail(str(err), 2)


def _fail(message: str, code: int = 1):
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Citation-first question answering over a folder of source documents."""


@main.command()
@SOURCES_OPTION
@INDEX_OPTION
@click.option("--full", is_flag=True, help="re-embed every source instead of only new and changed ones")
@click.option("--watch", is_flag=True, help="keep running and rebuild when the sources folder changes")
@click.option("--wait", type=float, default=0, show_default=True, help="seconds to wait for a running build to finish")
def index(sources_dir, index_dir, full, watch, wait):
    """Build or update the index from the sources folder."""
    from qa.embedding import ModelError
    from qa.indexing import BuildBusy, BuildFailed, IndexBuilder, SourcesMismatch
    from qa.sources import SourceError

    settings = _settings(sources_dir=sources_dir, index_dir=index_dir)
    try:
        builder = IndexBuilder(settings, progress=sys.stderr.isatty())
    except SettingsError as err:
        _fail(str(err))

    def build(full_build: bool) -> None:
        report = builder.run(full=full_build, wait=wait)
        for problem in report.problems:
            click.secho(f"warning: {problem.file_name}: {problem.reason}", fg="yellow", err=True)
        for warning in report.warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        if report.full_reason and not full_build:
            click.echo(f"full rebuild: {report.full_reason}", err=True)
        click.echo(report.summary())

    try:
        if not watch:
            return build(full)
        from qa.watching import watch_sources

        pending_full = [full]  # --full applies to the first build that succeeds; the ones after it are incremental

        def next_build() -> None:
            build(pending_full[0])
            pending_full[0] = False

        watch_sources(builder.sources_folder(), next_build, echo=lambda m: click.echo(m, err=True))
    except (BuildBusy, BuildFailed, SourceError, ModelError, SourcesMismatch) as err:
        _fail(str(err))


@main.command()
@click.argument("question")
@click.option("-k", type=click.IntRange(1, 50), default=5, show_default=True, help="passages to return")
@click.option("--format", "output", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True,
              help="text for reading, the API's JSON response, or Markdown citations ready to paste")
@click.option("--json", "as_json", is_flag=True, help="same as --format json")
@click.option("--sort", type=click.Choice(["relevance", "newest"]), default="relevance", show_default=True,
              help="order of the results: relevance, or newest source first")
@INDEX_OPTION
def ask(question, k, output, as_json, sort, index_dir):
    """Ask QUESTION; print the passages that answer it with their citations."""
    import time

    from qa.api import ApiError, validate_question
    from qa.embedding import ModelError
    from qa.export import citations_markdown
    from qa.service import QAService, ServiceUnavailable

    started = time.perf_counter()
    try:
        question = validate_question(question)
        asked = QAService(_settings(index_dir=index_dir)).answer(question, k, sort=sort)
    except ApiError as err:
        _fail(err.message, 2)
    except (ServiceUnavailable, ModelError) as err:
        _fail(str(err))
    if as_json or output == "json":
        click.echo(json.dumps(QAService.response(asked, started), ensure_ascii=False, indent=2))
        return
    if output == "markdown":
        click.echo(citations_markdown(question, asked.citations), nl=False)
        return
    if not asked.answer.answered:
        click.secho("No passage answers this confidently. Closest passages:", fg="yellow")
    for c in asked.citations:
        s = c.source
        head = ", ".join(x for x in (s.outlet, s.title, s.published) if x)
        click.secho(f"[{c.rank}] {head or s.id}  (score {c.score:.4f})", bold=True)
        lo, hi = c.highlight[0] - c.span[0], c.highlight[1] - c.span[0]
        body = c.text[:lo] + click.style(c.text[lo:hi], fg="green", bold=True) + c.text[hi:]
        click.echo(textwrap.indent(body, "    "))
        click.echo(f"    — {s.id} chars {c.span[0]}–{c.span[1]}\n")


@main.command()
@INDEX_OPTION
def sources(index_dir):
    """List the indexed sources and their metadata."""
    from qa.service import QAService, ServiceUnavailable

    try:
        items = QAService(_settings(index_dir=index_dir)).sources()
    except ServiceUnavailable as err:
        _fail(str(err))
    for s in items:
        click.echo(f"{s['id']}\t{s['outlet'] or '-'}\t{s['published'] or '-'}\t{s['title'] or '-'}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=None, help="port (env QA_PORT, default 8000)")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="worker processes")
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True, help="threads per worker")
@INDEX_OPTION
@SOURCES_OPTION
def serve(host, port, workers, threads, index_dir, sources_dir):
    """Serve the web page and the API with gunicorn (a production WSGI server)."""
    from qa.serving import serve as run

    settings = _settings(index_dir=index_dir, port=port, sources_dir=sources_dir,
                         sources_origin="qa serve --sources" if sources_dir else None)
    run(settings, host=host, port=settings.port, workers=workers, threads=threads)


def _eval_errors() -> tuple[type[Exception], ...]:
    from qa.embedding import ModelError
    from qa.evaluation import QuestionsError
    from qa.fitting import FitError
    from qa.indexing import BuildBusy, BuildFailed, SourcesMismatch
    from qa.ranker import RankerError
    from qa.sources import SourceError
    from qa.versions import IndexUnavailable

    return (QuestionsError, FitError, IndexUnavailable, RankerError, BuildBusy, BuildFailed, SourcesMismatch, SourceError, ModelError)


@main.command(name="eval")
@click.option("--questions", type=click.Path(dir_okay=False), default="eval/questions.jsonl", show_default=True)
@INDEX_OPTION
@click.option("--url", help="evaluate a running service through its /api/ask (shipped configuration only)")
@click.option("--collection", "collection_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="a collection folder (sources/ and questions.jsonl): build a temporary index of it and score it")
@click.option("--all", "all_collections", is_flag=True, help="the seeds and every collection under eval/collections/")
@click.option("--split", type=click.Choice(["dev", "test", "all"]), default="all", show_default=True, help="questions scored")
@click.option("--work", "work_dir", type=click.Path(file_okay=False), help="where collection indexes are built (default: a temporary folder); reused incrementally")
@click.option("--compare", nargs=2, type=click.Path(dir_okay=False, exists=True), metavar="OLD.json NEW.json",
              help="list the questions that got better or worse between two --json runs")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (with every question's ranks)")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="write eval.json and eval.png here")
def evaluate(questions, index_dir, url, collection_dirs, all_collections, split, work_dir, compare, as_json, report_dir):
    """Measure answer@k, MRR, highlight, abstention and latency; baselines and ablations side by side."""
    import tempfile
    from pathlib import Path

    from qa import evaluation as ev
    from qa.embedding import Embedder

    if compare:
        try:
            old, new = (json.loads(Path(p).read_text(encoding="utf-8")) for p in compare)
            changes = ev.compare(old, new)
        except (OSError, ValueError, ev.QuestionsError) as err:
            _fail(f"cannot compare {compare[0]} and {compare[1]}: {err}")
        for c in changes:
            click.echo(f"{c['change']:<7}{c['collection'] + ':' if c['collection'] else ''}{c['id']}  {c['old']} → {c['new']}")
        click.echo(f"{sum(c['change'] == 'better' for c in changes)} better, {sum(c['change'] == 'worse' for c in changes)} worse")
        return
    if all_collections and collection_dirs:
        _fail("--all already scores every collection; give either --all or --collection", 2)
    if (collection_dirs or all_collections) and (url or index_dir or questions != "eval/questions.jsonl"):
        _fail("--collection and --all build their own indexes from each collection's questions; "
              "--questions, --index and --url are for one question set", 2)
    chosen = None if split == "all" else split
    try:
        if collection_dirs or all_collections:
            collections = ev.discover_collections() if all_collections else [ev.collection_at(Path(d)) for d in collection_dirs]
            settings = _settings()
            with tempfile.TemporaryDirectory(prefix="qa-eval-") as tmp:
                report = ev.evaluate_collections(collections, Path(work_dir or tmp), Embedder.for_settings(settings), chosen)
            text = ev.format_collections(report)
        else:
            gold = [q for q in ev.load_questions(Path(questions)) if chosen in (None, q.split)]
            if not gold:
                raise ev.QuestionsError(f"{questions} has no questions in the {split} split")
            seeds = Path(questions).resolve() == ev.seeds_collection().questions.resolve()  # whose labelled pairs to score
            report = ev.Evaluator(_settings(index_dir=index_dir), url=url, collection=ev.SEEDS_COLLECTION if seeds else None).run(gold)
            text = ev.format_table(report)
    except _eval_errors() as err:
        _fail(str(err))
    except OSError as err:
        _fail(f"cannot reach {url}: {err}" if url else str(err))
    if report_dir:
        paths = ev.write_report(report, Path(report_dir))
        click.echo(f"wrote {paths[0]} and {paths[1]}", err=True)
    click.echo(json.dumps(report, ensure_ascii=False) if as_json else text)


@main.command()
@click.option("--work", "work_dir", type=click.Path(file_okay=False), help="where collection indexes are built (default: a temporary folder)")
@click.option("--out", type=click.Path(dir_okay=False), help="model file to write (default: the shipped qa/ranker.json)")
@click.option("--show", type=click.Choice(["dev", "test"]), default="test", show_default=True,
              help="held-out split printed (choose designs on dev; report test)")
def fit(work_dir, out, show):
    """Fit the ranking and abstention weights on every collection's dev split; print leave-one-collection-out figures."""
    import tempfile
    from pathlib import Path

    import os

    from qa.embedding import Embedder
    from qa.evaluation import discover_collections
    from qa.fitting import Fitter, format_loco
    from qa.ranker import MODEL_FILE

    target = Path(out) if out else MODEL_FILE
    if not os.access(target if target.exists() else target.parent, os.W_OK):
        _fail(f"cannot write the model to {target}; give --out FILE", 2)
    settings = _settings()
    try:
        with tempfile.TemporaryDirectory(prefix="qa-fit-") as tmp:
            model, loco = Fitter(Path(work_dir or tmp), Embedder.for_settings(settings)).run(discover_collections())
    except _eval_errors() as err:
        _fail(str(err))
    model.save(target)
    click.echo(format_loco(loco, show))
    click.echo(f"wrote {target} (threshold {model.threshold})", err=True)


@main.command()
@click.option("--sizes", default="1000,10000,100000,1000000", show_default=True, help="synthetic collection sizes, in chunks")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="bench/results", show_default=True)
@click.option("--no-scaleout", is_flag=True, help="skip the runs against a Chroma server (1 vs 2 workers, and the sizes served by a stateless worker)")
@SOURCES_OPTION
def bench(sizes, out_dir, no_scaleout, sources_dir):
    """Benchmark latency, throughput, builds, cold start and scale, each beside its floor."""
    from pathlib import Path

    from qa.bench import Bench, format_bench

    try:
        parsed = tuple(int(s) for s in sizes.split(",") if s.strip())
    except ValueError:
        _fail(f"--sizes takes whole numbers separated by commas, not {sizes!r}", 2)
    report = Bench(_settings(sources_dir=sources_dir), Path(out_dir), sizes=parsed, scaleout=not no_scaleout).run()
    click.echo(format_bench(report))
    click.echo(f"\nwrote {Path(out_dir) / 'bench.json'} and {Path(out_dir) / 'bench.png'}", err=True)
