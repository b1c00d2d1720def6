"""Render a compression report (``main.py report``) to a PNG with a headless Chromium.

    .venv/bin/python scripts/report_screenshot.py --html report.html --out docs/screenshots/report.png
    .venv/bin/python scripts/report_screenshot.py --data ../shared/data/modelnet40_npy1024 \\
        --out docs/screenshots/report.png          # builds the bundled models' report first

The browser is the first of ``chromium-headless-shell``, ``chromium``, ``chromium-browser``,
``google-chrome`` found on PATH (or ``--browser``); on Debian ``apt-get install
chromium-headless-shell`` gives one. ``playwright install`` is not used: it downloads its browser
from a CDN that this machine cannot reach. It shows the page as a reader's browser does; nothing it
needs lies outside the file (``--offline`` blocks every network request to prove it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser(explicit: str | None = None) -> str | None:
    """The path of a headless-capable Chromium, or None."""
    if explicit:
        return shutil.which(explicit) or (explicit if Path(explicit).is_file() else None)
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def screenshot(html: Path, out: Path, browser: str, width: int = 1000, height: int = 1500, timeout: float = 120) -> Path:
    """``html`` rendered at ``width`` x ``height`` CSS pixels (the top of the page) into ``out``.

    Network access is refused (a proxy that does not exist), so a page that needed anything outside
    itself would show it missing.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="t3dnet_chromium_") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
               f"--window-size={width},{height}", f"--screenshot={out.resolve()}", html.resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--html", type=Path, default=None, help="an existing report (default: build one)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "modelnet40_npy1024"),
                   help="dataset for the report that is built when --html is not given")
    p.add_argument("--limit", type=int, default=None, help="test shapes of the built report (default: report's)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "report.png")
    p.add_argument("--browser", default=None, help="a Chromium executable (default: the first found on PATH)")
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--height", type=int, default=1500)
    args = p.parse_args(argv)
    browser = find_browser(args.browser)
    if browser is None:
        print(f"error: no headless Chromium found ({', '.join(BROWSERS)}); on Debian: "
              "apt-get install chromium-headless-shell", file=sys.stderr)
        return 2
    html = args.html
    if html is None:
        from core.inference import DEFAULT_STUDENT, DEFAULT_TEACHER
        from core.report import DEFAULT_LIMIT, ReportRequest, build_report

        html = Path(tempfile.mkdtemp(prefix="t3dnet_report_")) / "report.html"
        req = ReportRequest(str(DEFAULT_TEACHER), str(DEFAULT_STUDENT), args.data,
                            limit=DEFAULT_LIMIT if args.limit is None else args.limit)
        r = build_report(req, html)
        print(f"built {html} in {r['seconds']:.1f} s")
    shot = screenshot(html, args.out, browser, args.width, args.height)
    print(f"saved {shot} ({browser})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
