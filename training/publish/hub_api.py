"""What every upload of training.push shares (models, datasets, the Space): the error a person must fix, the
result to pin, the repo-id check, the Hub client (refusing early offline or without a token) and the listing
of the files to upload."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PushError(Exception):
    """Something the person pushing must fix; the message says what."""


@dataclass
class PushResult:
    repo_id: str
    revision: str           # the commit sha to pin
    commit_url: str
    branch: str
    sha256: dict[str, str] = field(default_factory=dict)


def listing(folder: Path, files: list[str]) -> str:
    rows = [(name, (folder / name).stat().st_size) for name in files]
    width = max(len(n) for n, _ in rows)
    lines = [f"  {n:<{width}}  {s:>12,d} bytes" for n, s in rows]
    lines.append(f"  {'total':<{width}}  {sum(s for _, s in rows):>12,d} bytes in {len(rows)} files")
    return "\n".join(lines)


def hub_api(endpoint: str | None, token: str | None):
    """An HfApi with a token, refusing early (and clearly) in offline mode or without a token."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: uploads are blocked. Unset it (e.g. `env -u HF_HUB_OFFLINE "
                        "python -m training.push …`), or use --dry-run.")
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return HfApi(endpoint=endpoint, token=token)


def check_repo_id(repo_id: str) -> str:
    if not REPO_ID.match(repo_id or "") or ".." in repo_id:
        raise PushError(f"--repo/--space must look like ORG/NAME, got {repo_id!r}")
    return repo_id


__all__ = ["REPO_ID", "PushError", "PushResult", "check_repo_id", "hub_api", "listing"]
