// Copy a plain-text citation; bring the cited span into view and focus on the source page.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const text = button.dataset.citation;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
});

document.addEventListener("DOMContentLoaded", () => {
  const cited = document.getElementById("cited");
  if (cited) {
    cited.scrollIntoView({ block: "center" });
    cited.focus({ preventScroll: true });
  }
});

// Leave empty filter fields out of the URL, so a shared link carries only what was chosen.
document.addEventListener("submit", (event) => {
  for (const field of event.target.querySelectorAll(".filters input[type=date]")) {
    if (!field.value) field.disabled = true;
  }
});
