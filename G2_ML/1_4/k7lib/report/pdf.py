"""Compiling the article: pdflatex (twice when cross-references ask for it), confined to the outputs
folder, the PDF moved into place whole or not at all; the problems of its log, and its first page as a
PNG for the notebook."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

OVERFULL_LIMIT_PT = 10.0    # overfull boxes wider than this are reported by `log_problems`


def log_problems(log: str, overfull_limit_pt: float = OVERFULL_LIMIT_PT) -> list:
    """Errors ("! ..." lines), undefined references and overfull boxes wider than the limit in a pdflatex log."""
    problems = [line for line in log.splitlines() if line.startswith("!")]
    problems += [m.group(0) for m in re.finditer(r"Overfull \\[hv]box \(([\d.]+)pt too \w+\)[^\n]*", log)
                 if float(m.group(1)) > overfull_limit_pt]
    problems += [line for line in log.splitlines() if "undefined" in line and ("Reference" in line or "Citation" in line)]
    return problems


# pdflatex reads and writes only below the folder it runs in (kpathsea's paranoid mode: no absolute
# paths, no "..", no dot files) and runs no shell commands
CONFINED = {"openin_any": "p", "openout_any": "p", "shell_escape": "f"}
_AUX = ".pdflatex-"          # + random: the hidden folder of one compile's auxiliary files and PDF


def _pdf_complete(pdf: Path) -> bool:
    """A whole PDF: it starts with %PDF- and ends with %%EOF (a file cut short by a full disk does not)."""
    try:
        with open(pdf, "rb") as f:
            head = f.read(5)
            f.seek(max(0, pdf.stat().st_size - 1024))
            tail = f.read()
    except OSError:
        return False
    return head == b"%PDF-" and b"%%EOF" in tail


def _run_pdflatex(exe: str, path: Path, aux: Path, timeout: float) -> str:
    """pdflatex on path (at most three passes, while the log asks for a rerun), confined to path's folder;
    returns the final log. RuntimeError with the end of the log when it fails or its PDF is not whole."""
    env = {**os.environ, **CONFINED}
    for _ in range(3):
        proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
                               f"-output-directory={aux.name}", path.name], cwd=path.parent, env=env,
                              capture_output=True, text=True, errors="replace", timeout=timeout)
        pdf = aux / (path.stem + ".pdf")
        if proc.returncode != 0 or not _pdf_complete(pdf):
            raise RuntimeError(f"pdflatex failed on {path}:\n" + "\n".join(proc.stdout.splitlines()[-25:]))
        log = (aux / (path.stem + ".log")).read_text(encoding="latin-1")
        if "Rerun to get" not in log:
            break
    return log


def compile_tex(path, timeout: float = 120.0, keep_log: bool = False) -> Path | None:
    """Run pdflatex on the file; the PDF beside it, or None without pdflatex.

    pdflatex runs in the file's folder with file reading and writing confined to it (CONFINED:
    openin_any = openout_any = p, no shell escape), its auxiliary files and PDF in a hidden temporary
    folder there; it runs again while the log asks for it (cross-references), at most three times. The
    PDF is checked whole (%PDF- ... %%EOF) and moved into place with one rename, so a full disk or a
    failure leaves the previous PDF (or none), never a truncated one. keep_log: the final .log beside the
    PDF, by the same rename. Raises RuntimeError with the end of the log when pdflatex fails, OSError
    when the folder cannot be written; the temporary folder is removed either way.
    """
    exe = shutil.which("pdflatex")
    if exe is None:
        return None
    path = Path(path).resolve()
    aux = Path(tempfile.mkdtemp(prefix=_AUX, dir=path.parent))
    try:
        log = _run_pdflatex(exe, path, aux, timeout)
        out = path.with_suffix(".pdf")
        if keep_log:
            os.replace(aux / (path.stem + ".log"), path.with_suffix(".log"))
        os.replace(aux / (path.stem + ".pdf"), out)           # one rename: the old PDF or the whole new one
    finally:
        shutil.rmtree(aux, ignore_errors=True)
    return out


def first_page_png(pdf, out_png=None, dpi: int = 80) -> Path | None:
    """The PDF's first page as a PNG (pdftoppm, else pypdfium2); None when neither is available."""
    pdf = Path(pdf)
    out_png = Path(out_png) if out_png is not None else pdf.with_name(pdf.stem + "_page1.png")
    exe = shutil.which("pdftoppm")
    if exe is not None:
        subprocess.run([exe, "-png", "-r", str(dpi), "-f", "1", "-l", "1", "-singlefile", str(pdf),
                        str(out_png.with_suffix(""))], check=True, capture_output=True, timeout=60)
        return out_png
    try:
        import pypdfium2
    except ImportError:
        return None
    page = pypdfium2.PdfDocument(str(pdf))[0]
    page.render(scale=dpi / 72).to_pil().save(out_png)
    return out_png


def preview(tex, dpi: int = 80) -> dict:
    """Compile the article and render its first page, never raising: {"pdf", "png", "message"}.

    pdf / png are paths or None; message says what was done or why not (no pdflatex, no PDF
    rasteriser, or the end of pdflatex's log when it failed). For the notebook's last section.
    """
    tex = Path(tex)
    out = {"pdf": None, "png": None, "message": ""}
    if not tex.is_file():
        out["message"] = f"{tex} does not exist: run the export first"
        return out
    try:
        out["pdf"] = compile_tex(tex)
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        out["message"] = f"pdflatex could not compile {tex.name}: {err}"
        return out
    if out["pdf"] is None:
        out["message"] = (f"pdflatex is not installed: {tex.name} is ready to compile elsewhere "
                          "(apt-get install texlive-latex-recommended, then pdflatex twice)")
        return out
    try:
        out["png"] = first_page_png(out["pdf"], dpi=dpi)
    except (OSError, subprocess.SubprocessError) as err:
        out["message"] = f"compiled {out['pdf'].name}, but its first page could not be rendered: {err}"
        return out
    out["message"] = (f"compiled {out['pdf']}" + ("" if out["png"] else
                      "; install poppler-utils (pdftoppm) or pypdfium2 to show its first page here"))
    return out
