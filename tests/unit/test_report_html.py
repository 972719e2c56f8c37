"""Markdown and the self-contained HTML page with an inline SVG boot timeline per format."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from lkit.report.compare import compare
from lkit.report.human import boot_stages, html, markdown, timeline_svg, write_human
from lkit.report.model import RunSummary

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"


def base() -> RunSummary:
    return RunSummary.load(DATA / "run-base.json")


def test_boot_stages_are_consecutive_bars():
    run = base().runs[0]
    assert boot_stages(run) == [("kernel", 0.0, 1.8), ("init", 1.8, 2.6), ("services", 2.6, 3.4),
                                ("shell", 3.4, 7.9)]


def test_html_is_self_contained_with_an_svg_per_format(tmp_path):
    page = write_human(base(), tmp_path)[1].read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2 and page.count("</svg>") == 2
    assert "<style>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    assert "http://" not in page and "https://" not in page
    assert "boot timeline suites/linuxkit.yml iso-efi" in page
    assert "sysctl" in page   # onboot tick


def test_svg_is_well_formed_and_scaled():
    run = base().runs[0]
    svg = timeline_svg(run, width=640, standalone=True)
    root = ET.fromstring(svg)
    rects = root.findall("{http://www.w3.org/2000/svg}rect")
    assert len(rects) == 4
    widths = [float(r.get("width")) for r in rects]
    assert abs(sum(widths) - 620) < 1.0               # the stages fill the axis
    assert widths[3] > widths[0] > widths[1]          # shell stage longest, as in the data


def test_text_is_escaped():
    s = base()
    s.runs[0].checks[0].message = "<script>alert(1)</script>"
    page = html(s)
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_markdown_lists_checks_figures_and_comparison():
    new = copy.deepcopy(base())
    new.runs[0].figures["size.initrd"] = 40_000_000
    text = markdown(new, compare(base(), new))
    assert "# lkit run 20261130T070000Z-base01" in text
    assert "16 passed, 0 failed, 0 errors, 0 skipped" in text
    assert "- **regression**: suites/linuxkit.yml iso-efi: initrd size +27.4%" in text
    assert "| size.initrd | 40.0 MB |" in text


def test_no_boot_figures_means_no_chart():
    s = base()
    for run in s.runs:
        run.figures = {k: v for k, v in run.figures.items() if not k.startswith("boot.")}
    assert timeline_svg(s.runs[0]) == "" and "<svg" not in html(s)


def test_attachments_in_the_run_folder_are_relative_links(tmp_path):
    s = base()
    (tmp_path / "console").mkdir()
    log = tmp_path / "console" / "linuxkit-iso-efi.log"
    log.write_text("Welcome to LinuxKit\n")
    s.runs[0].check("boots").attachments = {"console": str(log), "elsewhere": "/var/tmp/x.log"}
    page = write_human(s, tmp_path)[1].read_text()
    assert '<a href="console/linuxkit-iso-efi.log">console</a>' in page
    assert "elsewhere: /var/tmp/x.log" in page and 'href="/' not in page


def test_samples_are_summarised():
    text = markdown(base())
    assert "| boot.shell | 7.90 s | n=3, 7.70 s-8.30 s |" in text
