"""Router tuning's proxy sets: public documents ranked by cosine to an owner's centroid, with the real MiniLM encoder,
and packed beside the domains' text for tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.core.errors import DataError
from tasks.core.tokenizer import load_tokenizer
from tasks.evaluation.inputs import token_batches
from tasks.evaluation.proxy import in_domain_shares, proxy_texts, select_proxies
from tasks.training.route import encode
from tests.profiles import paths_under
from tests.tasks.eval_world import build_world

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\npath = os.path.join(root, name)\n",
]
PROSE = [
    "The village council met on Tuesday to discuss the new bridge over the river.",
    "She walked along the beach at sunset, listening to the waves.",
    "The museum reopened after renovations with an exhibit on medieval tapestries.",
]


def test_select_proxies_ranks_by_cosine_to_each_centroid():
    texts = ["a", "b", "c", "d"]
    embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    chosen = select_proxies(texts, embeddings, {"x": np.array([2.0, 0.0]), "y": np.array([0.0, 0.5])}, 2)
    assert chosen == {"x": ["a", "b"], "y": ["c", "b"]}  # best first; "b" serves both, as a public document may
    with pytest.raises(ValueError, match="4 texts but 3 embeddings"):
        select_proxies(texts, embeddings[:3], {"x": np.array([1.0, 0.0])}, 1)


def test_the_encoder_picks_the_code_like_public_documents_for_a_code_owner():
    """A code owner's centroid (the MiniLM mean of its code) ranks the code-like public documents first."""
    owner_code = ["while x > 0:\n    x -= 1\n", "class Node:\n    def __init__(self):\n        self.next = None\n"]
    centroid = encode(owner_code, 8, "fp32").mean(axis=0)
    public = [PROSE[0], CODE[0], PROSE[1], CODE[1], PROSE[2], CODE[2]]
    chosen = select_proxies(public, encode(public, 8, "fp32"), {"code": centroid}, 3)
    assert sorted(chosen["code"]) == sorted(CODE)


def test_a_proxy_document_is_in_domain_only_where_no_other_centroid_public_included_is_nearer():
    embeddings = np.array([[1.0, 0.0], [0.9, 0.45], [0.6, 0.8], [0.0, 1.0]])
    owner, public = np.array([1.0, 0.1]), np.array([0.2, 1.0])
    # "x"'s two nearest: rows 0 and 1, both nearer x than public; its four: rows 2 and 3 are nearer public
    assert in_domain_shares(embeddings, {"x": owner}, public, 2) == {"x": 1.0}
    assert in_domain_shares(embeddings, {"x": owner}, public, 4) == {"x": 0.5}
    # a second owner's centroid takes row 1 from x (and row 2 from public): each document counts for its nearest
    shares = in_domain_shares(embeddings, {"x": owner, "y": np.array([0.9, 0.5])}, public, 2)
    assert shares == {"x": 0.5, "y": 1.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_profile):
    profile = tiny_profile.model_copy(
        update={"paths": tiny_profile.paths.model_copy(update=paths_under(tmp_path_factory.mktemp("proxyworld")))}
    )
    build_world(profile)
    return profile


def test_proxy_sets_are_public_documents_per_owner(world):
    from tasks.core.datasets import read_texts

    public = set(read_texts(world, "public", "train"))
    proxies = proxy_texts(world, world.closed_domains)
    assert proxies is not None and sorted(proxies.texts) == sorted(proxies.in_domain) == sorted(world.closed_domains)
    for texts in proxies.texts.values():
        assert len(texts) == min(world.eval.rt_proxy_docs, len(public)) and set(texts) <= public
    assert all(0.0 <= share <= 1.0 for share in proxies.in_domain.values())
    assert proxy_texts(world, world.closed_domains) == proxies  # seeded: the same sets again
    assert proxy_texts(world, ["no-such-domain"]) is None  # no router centroid: no proxy set


def test_token_batches_pack_the_proxy_sets_beside_the_domains(world):
    tokenizer = load_tokenizer(world)
    plain = list(token_batches(world, tokenizer, ["public"], 3, 0))
    assert [b.tolist() for b in plain] == [b.tolist() for b in token_batches(world, tokenizer, ["public"], 3, 0, {})]
    marker = "zebra " * 200  # a proxy document no public text contains
    with_proxy = torch.cat(list(token_batches(world, tokenizer, ["public"], 4, 0, {"code": [marker]})))
    zebra = tokenizer(" zebra", add_special_tokens=False)["input_ids"][-1]
    rows_with_marker = sum(int((row == zebra).any()) for row in with_proxy)
    assert 0 < rows_with_marker < len(with_proxy)  # both sources are drawn, interleaved
    with pytest.raises(DataError, match="code \\(router tuning's proxy documents\\): too little text"):
        list(token_batches(world, tokenizer, ["public"], 2, 0, {"code": ["x"]}))


def test_the_public_router_step_stores_the_pool_and_the_ranking_reads_it(tmp_path_factory, tiny_profile, monkeypatch):
    """r_pub's step stores the proxy pool's embeddings (its own sample encoded once, as the pool's head); ranking the
    pool then needs no encoder, and gives the sets that encoding it gives. Another pool size, or no router tuning,
    is not served from a stale file."""
    from safetensors.torch import load_file

    from model.router import domain_embedding
    from tasks.core.artifacts import RunPaths
    from tasks.core.datasets import read_texts
    from tasks.training import route

    root = tmp_path_factory.mktemp("poolworld")
    base = tiny_profile.model_copy(update={"paths": tiny_profile.paths.model_copy(update=paths_under(root))})
    profile = base.model_copy(update={"eval": base.eval.model_copy(update={"rt_proxy_pool": 40})})
    build_world(profile)
    paths = RunPaths(profile)
    route.embed_domain(profile, "public")

    pool = route.sample_documents(read_texts(profile, "public", "train"), 40, profile.seed)
    assert len(pool) > profile.router.embed_docs  # the pool reaches beyond r_pub's sample
    stored = load_file(str(paths.public_pool_embeddings))["embeddings"].numpy()
    assert stored.shape == (len(pool), 384)
    np.testing.assert_allclose(stored, route.encode(pool, 8, "fp32"), atol=1e-5)
    raw = load_file(str(paths.router_embedding("public")))["raw"].numpy()
    assert np.array_equal(domain_embedding(stored[: profile.router.embed_docs]), raw)  # r_pub's own vectors

    encoded_here = proxy_texts(profile, profile.closed_domains)  # the stored pool
    assert proxy_texts(profile, profile.closed_domains, can_encode=False) == encoded_here  # a worker with no encoder
    paths.public_pool_embeddings.rename(root / "kept.safetensors")
    assert proxy_texts(profile, profile.closed_domains) == encoded_here  # encoded in the evaluation instead
    assert proxy_texts(profile, profile.closed_domains, can_encode=False) is None  # ... or public text alone
    (root / "kept.safetensors").rename(paths.public_pool_embeddings)
    with monkeypatch.context() as patch:
        patch.setattr(route, "encode", lambda *a, **k: pytest.fail("the stored pool was encoded again"))
        assert proxy_texts(profile, profile.closed_domains) == encoded_here

    other = profile.model_copy(update={"eval": profile.eval.model_copy(update={"rt_proxy_pool": 36})})
    assert route.load_public_pool(other, pool[:36]) is None  # another pool: encoded, not read from the file
    no_tuning = profile.model_copy(update={"eval": profile.eval.model_copy(update={"rt_steps": 0})})
    route.embed_domain(no_tuning, "public")
    assert not paths.public_pool_embeddings.exists()
