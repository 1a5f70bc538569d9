"""Open a reproduction's report (``OUT_DIR/index.html`` of ``nbseg reproduce``) in headless Chromium and check it.

Checks, from the browser's view of the page (``--dump-dom`` after the page's load event, with a virtual-time budget):
every ``<img>`` loaded (the report's inline script writes ``data-images-loaded`` / ``data-images-total`` on
``<body>`` once the page has loaded); every image and link of the report resolves to a file under OUT_DIR; then a
screenshot (PNG) is saved and the report's size on disk printed. A benchmark script, not a test: it needs Chromium
(Debian: ``apt-get install chromium``), which CI does not install.

    python benchmarks/report_browser_check.py OUT_DIR [--screenshot report.png] [--chromium PATH]

Exit status 0 when every check passes, 1 otherwise.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

BUDGET_MS = 5000
WINDOW = "1400,2200"


class _Targets(HTMLParser):
    """Every img src and a href of a page, and the <body> attributes."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.body = [], [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        elif tag == "body":
            self.body = attrs


def _chromium(path: str | None) -> str:
    found = path or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        sys.exit("no Chromium found: apt-get install chromium (Debian), or pass --chromium PATH")
    return found


def _browser(binary: str, profile: str, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--virtual-time-budget={BUDGET_MS}", "--allow-file-access-from-files", f"--window-size={WINDOW}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=180)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check(out: Path, screenshot: Path, binary: str) -> list[str]:
    index = (out / "index.html").resolve()
    if not index.is_file():
        return [f"{index} does not exist; run nbseg reproduce {out} first"]
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        dom = _browser(binary, profile, "--dump-dom", index.as_uri())
        if dom.returncode != 0 or "<body" not in dom.stdout:
            return [f"chromium --dump-dom failed ({dom.returncode}): {dom.stderr.strip()[-500:]}"]
        page = _Targets()
        page.feed(dom.stdout)
        loaded, total = page.body.get("data-images-loaded"), page.body.get("data-images-total")
        if loaded is None:
            problems.append("the page's load script did not run (no data-images-loaded on <body>)")
        elif int(loaded) != int(total) or int(total) != len(page.images):
            problems.append(f"{loaded} of {total} images loaded in the browser ({len(page.images)} <img> in the DOM)")
        for target in page.images + page.links:
            if re.match(r"^[a-z]+:", target) or target.startswith("/"):
                problems.append(f"absolute link {target!r}: the report must only link inside OUT_DIR")
            elif not (out / unquote(target.split("#")[0])).is_file():
                problems.append(f"{target!r} does not resolve to a file under {out}")
        shot = _browser(binary, profile, f"--screenshot={screenshot.resolve()}", index.as_uri())
        if not screenshot.is_file():
            problems.append(f"no screenshot written ({shot.returncode}): {shot.stderr.strip()[-500:]}")
    print(f"report: {index}")
    print(f"images: {len(page.images)} in the DOM, {loaded} loaded in the browser; links: {len(page.links)}")
    linked = {out / unquote(t) for t in page.images + page.links if (out / unquote(t)).is_file()}
    print(f"size on disk: index.html {index.stat().st_size / 1024:.1f} KiB; index.html with the pages and figures "
          f"it links {(index.stat().st_size + sum(p.stat().st_size for p in linked)) / 2**20:.2f} MiB; "
          f"all of OUT_DIR {_size(out) / 2**20:.1f} MiB")
    if screenshot.is_file():
        print(f"screenshot: {screenshot} ({screenshot.stat().st_size / 1024:.0f} KiB)")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="the reproduction folder (holds index.html)")
    parser.add_argument("--screenshot", type=Path, default=None, help="where to save the PNG "
                                                                      "(default: OUT_DIR/../report_screenshot.png)")
    parser.add_argument("--chromium", default=None, help="the browser binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    shot = args.screenshot or args.out_dir.resolve().parent / "report_screenshot.png"
    problems = check(args.out_dir.resolve(), shot, _chromium(args.chromium))
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("all checks passed" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
