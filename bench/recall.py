"""Memory retrieval benchmark: recall of hand-labelled questions through `POST /api/memories/search`, beside
exact cosine and BM25, and the search's latency at 250 and 10,000 memories per user. The questions are asked a
second time with a rerank model set (`bench.embedder.word_overlap`, a word-overlap rule, not a model): that row
checks the rerank wiring, it says nothing of what a real reranker would do.

Run with `make bench` (or `python -m bench.recall`). The facts and questions are in `bench/data/memory_recall.json`:
each person's facts are stored as one Lyss user's memories through the API (`infer: false`), embedded by
all-MiniLM-L6-v2 (`bench.embedder`, on loopback, weights from the installed package). The ranking measured is
whatever `app.memory.services.search` does on the checked-out code.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import msgspec
import numpy as np
from pgvector.asyncpg import register_vector
from rank_bm25 import BM25Okapi
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.memory import services
from app.settings import new_key_entry, parse_keyring
from bench.embedder import DIMENSIONS, MODEL, RERANK_MODEL, Embedder, serve
from bench.foundation import _free_port, _serve, prepare_priced_tenant
from db.auth import User
from db.bootstrap import plain_url
from db.session import create_engine, create_session_maker, tenant_session

DATA = Path(__file__).resolve().parent / "data" / "memory_recall.json"
# The model's vectors of the set and the filler, kept between runs (git-ignored, like the peers under .bench/).
KEPT_VECTORS = Path(__file__).resolve().parent.parent / ".bench" / "recall-vectors.npz"
DATABASE = "lyss_recall_bench"
LIMIT = 10
KS = (1, 5, 10)
TYPES = ("single-hop", "paraphrase", "multi-hop", "temporal")
BOOTSTRAP_RESAMPLES = 2000
SEED = 20261130
# Latency: one person's facts padded with filler facts to each size.
SIZES = (250, 10_000)
WARM_UP = 40
TIMED = 250
# Searches of questions never asked before, per size.
FRESH = 100
RERANKED = "Lyss + rerank (mock word-overlap rule, wiring only)"


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _fillers(count: int, rng: random.Random) -> list[str]:
    """Distinct, plausible facts about nobody in the labelled set: the haystack of the latency users."""
    names = ["Alex", "Sam", "Jordan", "Robin", "Morgan", "Casey", "Jamie", "Taylor", "Riley", "Quinn", "Avery", "Drew"]
    places = ["Lisbon", "Krakow", "Dublin", "Lyon", "Seville", "Tallinn", "Bruges", "Trieste", "Bergamo", "Ghent",
              "Valencia", "Leipzig", "Cork", "Nantes", "Turku", "Brno"]  # fmt: skip
    things = ["a ceramic teapot", "a pair of hiking boots", "a secondhand piano", "a folding kayak", "a camera lens",
              "a wool blanket", "a cast-iron pan", "a standing desk", "a telescope", "a sewing machine"]  # fmt: skip
    hobbies = ["watercolour painting", "bird watching", "chess", "pottery", "salsa dancing", "rock climbing",
               "beekeeping", "origami", "woodworking", "choir singing", "orienteering", "calligraphy"]  # fmt: skip
    foods = ["lentil soup", "mushroom risotto", "banana bread", "fish tacos", "pad thai", "goulash", "paella",
             "shakshuka", "pierogi", "miso ramen"]  # fmt: skip
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"]  # fmt: skip
    templates = [
        "{name} from the book club moved to {place} in {month} {year}",
        "The neighbour's cousin bought {thing} for {number} euros at a market in {place}",
        "A colleague called {name} took up {hobby} after a trip to {place}",
        "The office canteen served {food} every {month} for {small} years",
        "{name}'s landlord raised the rent by {small} percent in {month}",
        "The train to {place} was delayed {number} minutes one morning in {month} {year}",
        "{name} recommended a podcast about {hobby} with {number} episodes",
        "An old school friend, {name}, runs a {food} stall in {place}",
        "The gym on the corner added {small} new machines and a class on {hobby}",
        "{name} lent {thing} to a flatmate in {year} and never got it back",
    ]
    made: dict[str, None] = {}
    while len(made) < count:
        slots = {
            "name": rng.choice(names),
            "place": rng.choice(places),
            "thing": rng.choice(things),
            "hobby": rng.choice(hobbies),
            "food": rng.choice(foods),
            "month": rng.choice(months),
            "year": rng.randint(2001, 2025),
            "number": rng.randint(20, 900),
            "small": rng.randint(2, 19),
        }
        made[rng.choice(templates).format(**slots)] = None
    return list(made)


def _recall(ranked: list[str], evidence: list[str], k: int) -> float:
    return len(set(ranked[:k]) & set(evidence)) / len(evidence)


class Methods:
    """Each method's top LIMIT fact ids for each question."""

    def __init__(self) -> None:
        self.ranked: dict[str, dict[str, list[str]]] = defaultdict(dict)


async def _load_padded(superuser_url: str, tenant_id: UUID, user_id: UUID, rows: list[tuple[str, np.ndarray]]) -> None:
    # COPY as the superuser: padding is setup; the searches are what is measured.
    connection = await asyncpg.connect(plain_url(superuser_url, DATABASE))
    try:
        await register_vector(connection)
        await connection.copy_records_to_table(
            "memory_user_memories",
            columns=[
                "id",
                "tenant_id",
                "user_id",
                "memory_text",
                "memory_hash",
                "embedding",
                "embedding_model",
                "embedding_dim",
            ],
            records=[
                (
                    uuid7(),
                    tenant_id,
                    user_id,
                    services.normalize(text),
                    services.memory_hash(text),
                    vector,
                    MODEL,
                    DIMENSIONS,
                )
                for text, vector in rows
            ],
        )
        # As autovacuum leaves a table in use: statistics, and the visibility map that index-only scans need.
        await connection.execute("VACUUM ANALYZE memory_user_memories")
    finally:
        await connection.close()


async def _add_users(app_url: str, tenant_id: UUID, names: list[str]) -> dict[str, User]:
    engine = create_engine(app_url, pool_size=1)
    users = {}
    async with tenant_session(create_session_maker(engine), tenant_id) as session:
        for name in names:
            user = User(email=f"{name.lower()}@recall.example.com", hashed_password=None)
            session.add(user)
            users[name] = user
        await session.commit()
    await engine.dispose()
    return users


async def _rerank_with(app_url: str, tenant_id: UUID, model: str | None) -> None:
    engine = create_engine(app_url, pool_size=1)
    async with tenant_session(create_session_maker(engine), tenant_id) as session:
        current = await services.memory_settings(session)
        await services.save_memory_settings(session, msgspec.structs.replace(current, rerank_model=model))
        await session.commit()
    await engine.dispose()


def _quantile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _bench(superuser_url: str, redis_url: str, embedder: Embedder, port_of_embedder: int) -> list[str]:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    facts: list[dict[str, Any]] = data["facts"]
    questions: list[dict[str, Any]] = data["questions"]
    people = list(dict.fromkeys(fact["person"] for fact in facts))
    rng = random.Random(SEED)
    filler = _fillers(max(SIZES), rng)
    started = time.perf_counter()
    embedder.embed([fact["text"] for fact in facts] + [question["question"] for question in questions] + filler)
    embedded_in = time.perf_counter() - started
    embedder.keep()

    encryption_keys = new_key_entry()
    app_url, _, admin = asyncio.run(
        prepare_priced_tenant(
            superuser_url,
            DATABASE,
            f"http://127.0.0.1:{port_of_embedder}/v1",
            encryption_keys,
            prices={MODEL: (20_000, 0), RERANK_MODEL: (20_000, 0)},
            settings={"memory": {"enabled": True, "embedding_model": MODEL}},
        )
    )
    users = asyncio.run(_add_users(app_url, admin.tenant_id, [*people, *(f"pad{size}" for size in SIZES)]))
    jwt_keys = new_key_entry()
    keyring = parse_keyring(jwt_keys, "LYSS_JWT_KEYS")

    def bearer(user: User) -> dict[str, str]:
        principal = Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7())
        return {"Authorization": f"Bearer {issue_access_token(keyring, principal, ttl_seconds=7200)}"}

    environment = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": app_url,
        "REDIS_URL": redis_url,
        "LYSS_ENCRYPTION_KEYS": encryption_keys,
        "LYSS_JWT_KEYS": jwt_keys,
        "LYSS_WORKERS": "1",
    }
    port = _free_port()
    methods = Methods()
    latencies: dict[str, list[float]] = {}
    with _serve(environment, port), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        memory_of: dict[str, str] = {}
        for fact in facts:
            response = client.post(
                "/api/memories",
                json={"text": fact["text"], "infer": False, "metadata": {"session": fact["session"]}},
                headers=bearer(users[fact["person"]]),
            )
            if response.status_code != 201:
                raise SystemExit(f"storing {fact['id']}: {response.status_code} {response.text[:300]}")
            memory_of[response.json()["id"]] = fact["id"]

        # Baselines over the same vectors (exact cosine) and the same words (BM25), each person's facts alone.
        by_person = {person: [fact for fact in facts if fact["person"] == person] for person in people}
        for person, own in by_person.items():
            matrix = embedder.embed([fact["text"] for fact in own])
            bm25 = BM25Okapi([_words(fact["text"]) for fact in own], k1=1.2, b=0.75)
            for question in (question for question in questions if question["person"] == person):
                similarity = matrix @ embedder.embed([question["question"]])[0]
                methods.ranked["exact cosine"][question["id"]] = [
                    own[index]["id"] for index in np.argsort(-similarity, kind="stable")[:LIMIT]
                ]
                scores = bm25.get_scores(_words(question["question"]))
                methods.ranked["BM25"][question["id"]] = [
                    own[index]["id"] for index in np.argsort(-scores, kind="stable")[:LIMIT] if scores[index] > 0
                ]
        for question in questions:
            response = client.post(
                "/api/memories/search",
                json={"query": question["question"], "limit": LIMIT},
                headers=bearer(users[question["person"]]),
            )
            response.raise_for_status()
            methods.ranked["Lyss"][question["id"]] = [memory_of[hit["memory"]["id"]] for hit in response.json()]

        asyncio.run(_rerank_with(app_url, admin.tenant_id, RERANK_MODEL))
        for question in questions:
            response = client.post(
                "/api/memories/search",
                json={"query": question["question"], "limit": LIMIT},
                headers=bearer(users[question["person"]]),
            )
            response.raise_for_status()
            if "x-lyss-search-notice" in response.headers:
                raise SystemExit(f"the reranked search answered: {response.headers['x-lyss-search-notice']}")
            methods.ranked[RERANKED][question["id"]] = [memory_of[hit["memory"]["id"]] for hit in response.json()]
        # The latency part measures the search alone.
        asyncio.run(_rerank_with(app_url, admin.tenant_id, None))

        # Latency: the first person's facts padded with filler to each size, already embedded.
        first = by_person[people[0]]
        queries = [question["question"] for question in questions if question["person"] == people[0]]
        for size in SIZES:
            rows = [(fact["text"], embedder.embed([fact["text"]])[0]) for fact in first]
            pad = filler[: size - len(first)]
            rows += list(zip(pad, embedder.embed(pad), strict=True))
            user = users[f"pad{size}"]
            asyncio.run(_load_padded(superuser_url, user.tenant_id, user.id, rows))
            headers = bearer(user)
            for number in range(WARM_UP + TIMED):
                started = time.perf_counter()
                client.post(
                    "/api/memories/search",
                    json={"query": queries[number % len(queries)], "limit": LIMIT},
                    headers=headers,
                ).raise_for_status()
                if number == WARM_UP - 1:
                    compute_before = embedder.compute_seconds
                if number >= WARM_UP:
                    latencies.setdefault(f"POST /api/memories/search, {size} memories", []).append(
                        (time.perf_counter() - started) * 1000
                    )
            spent = embedder.compute_seconds - compute_before
            latencies[f"  (embedder compute during those timed searches at {size}: {spent:.3f} s)"] = []
            # A question never asked before: Lyss embeds it through the gateway (its query-vector cache
            # cannot answer) and the model computes it; the model's own time is taken out of each round trip.
            for number in range(FRESH):
                text = f"{queries[number % len(queries)]} (asked again, #{size}-{number})"
                started, compute_before = time.perf_counter(), embedder.compute_seconds
                client.post(
                    "/api/memories/search", json={"query": text, "limit": LIMIT}, headers=headers
                ).raise_for_status()
                latencies.setdefault(
                    f"POST /api/memories/search, {size} memories, a new question, minus the model's compute", []
                ).append((time.perf_counter() - started - (embedder.compute_seconds - compute_before)) * 1000)
        headers = bearer(users[people[0]])
        for number in range(WARM_UP + TIMED):
            started = time.perf_counter()
            client.get("/api/me", headers=headers).raise_for_status()
            if number >= WARM_UP:
                latencies.setdefault("GET /api/me (floor)", []).append((time.perf_counter() - started) * 1000)
        load = os.getloadavg()
    return _report(facts, questions, people, methods, latencies, load, embedded_in)


def _report(
    facts: list[dict[str, Any]],
    questions: list[dict[str, Any]],
    people: list[str],
    methods: Methods,
    latencies: dict[str, list[float]],
    load: tuple[float, ...],
    embedded_in: float,
) -> list[str]:
    counts = {kind: sum(question["type"] == kind for question in questions) for kind in TYPES}
    lines = [
        f"{len(facts)} facts about {len(people)} people (one Lyss user each), {len(questions)} questions: "
        + ", ".join(f"{kind} {count}" for kind, count in counts.items())
        + f"; model {MODEL} ({DIMENSIONS} dims), everything embedded (or read back from {KEPT_VECTORS.name}) in "
        f"{embedded_in:.0f} s",
        "| method | questions | recall@1 | recall@5 | recall@10 | hit@10 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method, ranked in methods.ranked.items():
        for kind in ("all", *TYPES):
            chosen = [question for question in questions if kind in ("all", question["type"])]
            figures = [
                statistics.mean(_recall(ranked[question["id"]], question["evidence"], k) for question in chosen)
                for k in KS
            ]
            hit = statistics.mean(
                bool(set(ranked[question["id"]][:10]) & set(question["evidence"])) for question in chosen
            )
            lines.append(
                f"| {method} | {kind} ({len(chosen)}) | "
                + " | ".join(f"{value:.3f}" for value in figures)
                + f" | {hit:.3f} |"
            )
    differences = np.array(
        [
            _recall(methods.ranked["Lyss"][question["id"]], question["evidence"], 10)
            - _recall(methods.ranked["exact cosine"][question["id"]], question["evidence"], 10)
            for question in questions
        ]
    )
    rng = np.random.default_rng(SEED)
    resampled = differences[rng.integers(0, len(differences), size=(BOOTSTRAP_RESAMPLES, len(differences)))].mean(
        axis=1
    )
    low, high = np.percentile(resampled, [2.5, 97.5])
    lines.append(
        f"Lyss - exact cosine, recall@10: {differences.mean():+.3f} (bootstrap 95% CI {low:+.3f} to {high:+.3f}, "
        f"paired over questions, {BOOTSTRAP_RESAMPLES} resamples)"
    )
    lines.append(f"latency, HTTP round trip from a client on the same machine, {TIMED} timed after {WARM_UP} warm-up:")
    for name, values in latencies.items():
        if values:
            lines.append(f"  {name}: p50 {statistics.median(values):.2f} ms, p95 {_quantile(values, 95):.2f} ms")
        else:
            lines.append(name)
    lines.append(f"load average after: {' '.join(f'{value:.2f}' for value in load)}")
    return lines


def main() -> None:
    load_before = os.getloadavg()
    embedder = Embedder(kept=KEPT_VECTORS)
    server = serve(embedder)
    try:
        with tempfile.TemporaryDirectory(prefix="lyss-recall-bench-") as scratch:
            postgres = EmbeddedPostgres(Path(scratch) / "postgres")
            redis_server = EmbeddedRedis(Path(scratch) / "redis")
            superuser_url = postgres.start()
            redis_url = redis_server.start()
            try:
                lines = _bench(superuser_url, redis_url, embedder, server.server_address[1])
            finally:
                redis_server.stop()
                postgres.stop()
    finally:
        server.shutdown()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs · Lyss {commit} (one "
        f"granian worker, embedded PostgreSQL and Redis) · load average before "
        f"{' '.join(f'{value:.2f}' for value in load_before)}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
