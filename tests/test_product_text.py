"""The product speaks of the product: no development diary (the word for a numbered period of work, matched by the
pattern below) in the documents, model cards, code comments, docstrings and CLI help, and no absolute machine path in anything
tracked outside tests/ nor in the safetensors metadata of a shipped model."""
from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest
from safetensors import safe_open

from helpers import ROOT

SESSION = re.compile(r"\bsessions?\b", re.IGNORECASE)
# Where the word names something else than a period of work; each with what it names. Kept tight: a phrase,
# never the bare word.
SESSION_ALLOWED = {
    r"\bsession_hash\b": "gr.Request.session_hash, Gradio's id of one browser's connection",
    r"\bbrowser sessions?\b": "Gradio's per-browser state (gr.State lives as long as one browser session)",
    r"\bpytest session\b|\bsession-scoped\b|scope=\"session\"": "pytest's fixture scope",
    r"\bstart_new_session\b": "subprocess.Popen's keyword (a POSIX process session)",
    (r"\bsessions? (?:of its own|kept|bound|whose|with no event|per call)|\b(?:finished|each finished|that|per-|few)"
     r" ?sessions?\b|\{session\}|\b[\d,]+ sessions\b|\bsession's\b"):
        "Gradio's per-client session (the state it keeps for one browser or API client; MEDGAN_MAX_SESSIONS)",
}
HELP_KEYWORDS = {"help", "description", "epilog", "usage"}

# Absolute paths of a machine: home and temp folders, the workspace, drive letters. System paths (/usr, /etc,
# /opt: a documented browser executable, Debian's data) are not machine-specific and are not matched.
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])/(?:root\b|home/[\w.-]+|Users/[\w.-]+|tmp/[\w.-]|var/tmp/|var/folders/|work/[\w.-]+|mnt/[\w.-]+)"
    r"|(?<![\w])[A-Za-z]:(?:\\\\|\\|/)(?:Users|Windows|[\w.-]{2,}(?:\\\\|\\|/))")
# Tracked files whose absolute-looking text is not a path of a machine, with the reason.
PATH_ALLOWED = {".gitignore": "ignore patterns are relative to the repository (`/tmp/` is the folder tmp/ here)"}


def tracked(*patterns: str) -> list[Path]:
    """Files git tracks under ROOT that match the patterns (a checkout without git: the files on disk)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *patterns], cwd=ROOT, capture_output=True, check=True)
        names = [n for n in out.stdout.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = sorted({str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern)})
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def session_words(text: str) -> list[str]:
    """The matches of the pattern in `text` that none of the allowed phrases explains."""
    for pattern in SESSION_ALLOWED:
        text = re.sub(pattern, "", text, flags=re.IGNORECASE)
    return [text[max(0, m.start() - 40):m.end() + 40].replace("\n", " ") for m in SESSION.finditer(text)]


def prose_of_python(source: str, name: str) -> list[tuple[int, str]]:
    """(line, text) of every comment, docstring and argparse help/description/epilog/usage string of a module."""
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                found.append((getattr(node, "lineno", 1), doc))
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in HELP_KEYWORDS:
                    parts = [n.value for n in ast.walk(keyword.value)
                             if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                    found.append((keyword.value.lineno, " ".join(parts)))
    return found


def test_the_detectors_find_what_they_should_and_nothing_else():
    assert session_words("Session 9: the run folders were gone") and session_words("in a later session")
    assert not session_words("per browser session (gr.State); request.session_hash; a pytest session fixture")
    assert not session_words("Popen(..., start_new_session=True)")
    prose = prose_of_python('"""Doc."""\nimport argparse  # session 3\np = argparse.ArgumentParser()\n'
                            'p.add_argument("--x", help="as in " "session 4")\nx = "session"\n', "m.py")
    assert [line for line, text in prose if session_words(text)] == [2, 4]  # the code's own string is not prose
    for bad in ("/work/main/weights/x", "--out /work/runs/a", "/home/alice/data", "/tmp/abc.npz", "cd /root",
                "C:\\Users\\me\\scans", "D:/data/scans", "/Users/me/x"):
        assert MACHINE_PATH.search(bad), bad
    for fine in ("/usr/bin/chromium", "/usr/share/doc/x", "weights/brain-t1-dcgan-64", "runs/name", "~/.cache/medgan",
                 "https://example.org/root/x", "{timeout}s:\\n{tail}", "`/home/…`", "ratio 3:2"):
        assert not MACHINE_PATH.search(fine), fine


def test_no_work_period_is_called_a_session_in_documents_cards_comments_or_help():
    found = []
    for path in tracked("README.md", "docs/*.md", "docs/**/*.md", "weights/*/README.md"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: …{hit}…" for hit in session_words(line)]
    for path in tracked("*.py"):
        for number, text in prose_of_python(path.read_text(encoding="utf-8"), str(path)):
            found += [f"{path.relative_to(ROOT)}:{number}: …{hit}…" for hit in session_words(text)]
    assert not found, "say what was measured, not when (see SESSION_ALLOWED for other meanings):\n" + "\n".join(found)


def machine_paths(text: str) -> list[str]:
    """Each machine path in `text`, up to the next space or quote."""
    hits = [re.match(r"[^\s\"'`]+", text[m.start():]).group(0) for m in MACHINE_PATH.finditer(text)]
    return hits + ([str(ROOT)] if len(str(ROOT)) > 1 and str(ROOT) in text else [])


def test_no_absolute_machine_path_in_tracked_files_outside_tests():
    found = []
    for path in tracked("."):
        name = str(path.relative_to(ROOT))
        if name.startswith("tests/") or name in PATH_ALLOWED:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: images, weights (their metadata: the next test)
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            found += [f"{name}:{number}: {hit}" for hit in machine_paths(line)]
    assert not found, "use repo-relative paths (weights/<id>, runs/<name>):\n" + "\n".join(found[:40])


@pytest.mark.parametrize("path", sorted((ROOT / "weights").glob("*/*.safetensors")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_absolute_machine_path_in_shipped_safetensors_metadata(path):
    with safe_open(str(path), framework="numpy") as weights:  # reads the JSON header only: no pickle
        metadata = weights.metadata() or {}
    found = [f"{key}: {hit}" for key, value in metadata.items() for hit in machine_paths(value)]
    assert not found, f"{path.relative_to(ROOT)} metadata: " + "; ".join(found)
