"""Knowledge base benchmark (`make bench`): recall@k by search mode, ingestion throughput, search latency at scale."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import random
import re
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import numpy as np
from fpdf import FPDF
from pgvector.asyncpg import register_vector
from sqlalchemy import event
from uuid_utils.compat import uuid7

from app.auth.tokens import Principal, issue_access_token
from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.encryption import SecretBox
from app.gateway.admin import encrypt_keys, provider_type
from app.knowledge import search
from app.knowledge.services import Caller, readable_bases
from app.settings import new_key_entry, parse_keyring
from bench.embedder import MODEL, Embedder, serve
from bench.foundation import _free_port, _serve, prepare_priced_tenant
from bench.gateway import _upstream
from db.bootstrap import plain_url
from db.provider import Channel, ModelPrice
from db.session import create_engine, create_session_maker, tenant_session

DATA = Path(__file__).resolve().parent / "data"
DOCUMENTS = DATA / "knowledge"
QUESTIONS = DATA / "knowledge_questions.json"
KEPT_VECTORS = Path(__file__).resolve().parent.parent / ".bench" / "knowledge-vectors.npz"
DATABASE = "lyss_knowledge_bench"
HASH_MODEL = "bench-hash"
DIMENSIONS = 384
MODES = ("hybrid", "vector", "text")
KS = (1, 5, 10)
LIMIT = 10
# Small passages for a small set: at the default 400 tokens each document would be one or two passages and
# recall@10 would say nothing.
QUALITY_CHUNK_TOKENS = 64
QUALITY_CHUNK_OVERLAP = 16
BOOTSTRAP_RESAMPLES = 2000
SEED = 20261130
# Throughput: documents through upload -> ready (PDFs of several pages among them), the base's default chunking.
THROUGHPUT_DOCUMENTS = 50
THROUGHPUT_PDFS = 10
# Latency: passages of the searched tenant, of each of the nine others, per loaded document.
# BENCH_KB_PASSAGES shrinks the load for a quick check of the benchmark itself.
SCALE_PASSAGES = int(os.environ.get("BENCH_KB_PASSAGES", "100000"))
OTHER_PASSAGES = min(2_000, SCALE_PASSAGES)
OTHER_TENANTS = 9
PASSAGES_PER_DOCUMENT = 500
WORDS_PER_PASSAGE = 60
WARM_UP = 20
# Words per latency query: the text leg ANDs them, and two of ~900 words match a few hundred loaded passages.
QUERY_WORDS = 2
TIMED = 150
# Bounds: no wait in this benchmark goes on longer than this.
INGEST_TIMEOUT = 900.0


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _quantile(values: list[float], percent: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def _latency(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.1f} ms, p95 {_quantile(values, 95):.1f} ms"


async def _add_channel(app_url: str, tenant_id: UUID, encryption_keys: str, base_url: str, model: str) -> None:
    """A second channel of the bench tenant, to the fast mock's embeddings."""
    engine = create_engine(app_url, pool_size=1)
    box = SecretBox(parse_keyring(encryption_keys, "LYSS_ENCRYPTION_KEYS"))
    async with tenant_session(create_session_maker(engine), tenant_id) as session:
        kind = await provider_type(session, "openai-compatible", echo_enabled=False)
        session.add(
            Channel(
                tenant_id=tenant_id,
                name="bench-hash",
                type_id=kind.id,
                base_url=base_url,
                encrypted_keys=encrypt_keys(box, tenant_id, ["bench-key"]),
                models=[model],
            )
        )
        session.add(ModelPrice(tenant_id=tenant_id, model=model, prompt_price=20_000, completion_price=0))
        await session.commit()
    await engine.dispose()


class Api:
    """The bench user's calls to `lyss serve`."""

    def __init__(self, client: httpx.Client, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    def create_base(self, name: str, model: str, **fields: Any) -> str:
        response = self.client.post(
            "/api/knowledge-bases", json={"name": name, "embedding_model": model, **fields}, headers=self.headers
        )
        if response.status_code != 201:
            raise SystemExit(f"creating the base {name}: {response.status_code} {response.text[:300]}")
        return str(response.json()["id"])

    def upload(self, base_id: str, name: str, content: bytes) -> dict[str, Any]:
        response = self.client.post(
            f"/api/knowledge-bases/{base_id}/documents", files={"file": (name, content)}, headers=self.headers
        )
        if response.status_code != 201:
            raise SystemExit(f"uploading {name}: {response.status_code} {response.text[:300]}")
        return dict(response.json())

    def wait_ready(self, base_id: str, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + INGEST_TIMEOUT
        while True:
            response = self.client.get(f"/api/knowledge-bases/{base_id}/documents", headers=self.headers)
            response.raise_for_status()
            documents = list(response.json())
            failed = [document for document in documents if document["status"] in ("failed", "canceled")]
            if failed:
                raise SystemExit(f"{failed[0]['filename']} ended {failed[0]['status']}: {failed[0]['error']}")
            if len(documents) == count and all(document["status"] == "ready" for document in documents):
                return documents
            if time.monotonic() > deadline:
                raise SystemExit(f"ingestion not done within {INGEST_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def search(self, base_id: str, query: str, mode: str) -> list[dict[str, Any]]:
        response = self.client.post(
            "/api/knowledge-bases/search",
            json={"base_ids": [base_id], "query": query, "mode": mode, "limit": LIMIT},
            headers=self.headers,
        )
        if response.status_code != 200:
            raise SystemExit(f"search ({mode}): {response.status_code} {response.text[:300]}")
        return list(response.json())


# --- 1. retrieval quality -------------------------------------------------------------------------


def _quality(api: Api) -> list[str]:
    questions: list[dict[str, Any]] = json.loads(QUESTIONS.read_text(encoding="utf-8"))["questions"]
    base_id = api.create_base(
        "Handbook and notes",
        MODEL,
        chunk_tokens=QUALITY_CHUNK_TOKENS,
        chunk_overlap=QUALITY_CHUNK_OVERLAP,
    )
    files = sorted(DOCUMENTS.iterdir())
    for path in files:
        api.upload(base_id, path.name, path.read_bytes())
    documents = api.wait_ready(base_id, len(files))
    passages = sum(document["chunk_count"] for document in documents)
    # The rank (1-based) of the first passage of the labelled document containing the labelled phrase.
    rank: dict[str, dict[str, int | None]] = defaultdict(dict)
    seen_phrases: set[str] = set()
    empty: Counter[str] = Counter()
    for question in questions:
        phrase = _normal(question["phrase"])
        for mode in MODES:
            hits = api.search(base_id, question["question"], mode)
            empty[mode] += not hits
            rank[mode][question["id"]] = next(
                (
                    number
                    for number, hit in enumerate(hits, start=1)
                    if hit["filename"] == question["document"] and phrase in _normal(hit["text"])
                ),
                None,
            )
            if rank[mode][question["id"]] is not None:
                seen_phrases.add(question["id"])

    def recall(mode: str, chosen: list[dict[str, Any]], k: int) -> float:
        found = [rank[mode][question["id"]] for question in chosen]
        return sum(1 for value in found if value is not None and value <= k) / len(chosen)

    types = sorted(Counter(question["type"] for question in questions))
    lines = [
        f"## 1. Retrieval quality: {len(files)} documents ({passages} chunks, passages of {QUALITY_CHUNK_TOKENS} "
        f"tokens with {QUALITY_CHUNK_OVERLAP} of overlap), {len(questions)} questions, all-MiniLM-L6-v2, limit {LIMIT}",
        f"labelled passage in some mode's top {LIMIT}: {len(seen_phrases)} of {len(questions)} (never: "
        f"{', '.join(question['id'] for question in questions if question['id'] not in seen_phrases) or 'none'})",
        "questions answered with no passage at all: "
        + ", ".join(f"{mode} {empty[mode]} of {len(questions)}" for mode in MODES),
        "| mode | questions | " + " | ".join(f"recall@{k}" for k in KS) + " |",
        "|---|---|" + "---:|" * len(KS),
    ]
    for mode in MODES:
        for kind in ("all", *types):
            chosen = [question for question in questions if kind in ("all", question["type"])]
            lines.append(
                f"| {mode} | {kind} ({len(chosen)}) | "
                + " | ".join(f"{recall(mode, chosen, k):.3f}" for k in KS)
                + " |"
            )
    rng = np.random.default_rng(SEED)
    for k in KS:
        differences = np.array(
            [
                float((rank["hybrid"][q["id"]] or LIMIT + 1) <= k) - float((rank["vector"][q["id"]] or LIMIT + 1) <= k)
                for q in questions
            ]
        )
        samples = differences[rng.integers(0, len(differences), size=(BOOTSTRAP_RESAMPLES, len(differences)))]
        low, high = np.percentile(samples.mean(axis=1), [2.5, 97.5])
        lines.append(
            f"hybrid - vector, recall@{k}: {differences.mean():+.3f} (paired bootstrap 95% CI {low:+.3f} to "
            f"{high:+.3f}, {BOOTSTRAP_RESAMPLES} resamples over questions)"
        )
    return lines


# --- 2. ingestion throughput ----------------------------------------------------------------------


def _vocabulary() -> list[str]:
    words = {word for path in DOCUMENTS.iterdir() for word in re.findall(r"[a-z]{3,}", path.read_text().lower())}
    return sorted(words)


def _sentence(rng: random.Random, words: list[str], length: int) -> str:
    return " ".join(rng.choice(words) for _ in range(length)).capitalize() + "."


def _generated_documents(rng: random.Random, words: list[str]) -> list[tuple[str, bytes]]:
    """Markdown and text of 1 to 40 paragraphs, and PDFs of 3 to 12 pages: distinct, mixed sizes."""
    made: list[tuple[str, bytes]] = []
    for number in range(THROUGHPUT_DOCUMENTS - THROUGHPUT_PDFS):
        paragraphs = rng.choice([1, 3, 8, 20, 40])
        lines = [f"# Generated note {number}", ""]
        for paragraph in range(paragraphs):
            if paragraph % 6 == 0:
                lines += [f"## Part {paragraph // 6}", ""]
            lines += [" ".join(_sentence(rng, words, rng.randint(8, 20)) for _ in range(5)), ""]
        suffix = "md" if number % 2 else "txt"
        made.append((f"note-{number}.{suffix}", "\n".join(lines).encode()))
    for number in range(THROUGHPUT_PDFS):
        pdf = FPDF()
        pdf.set_font("Helvetica", size=11)
        for _ in range(rng.randint(3, 12)):
            pdf.add_page()
            pdf.multi_cell(0, 6, "\n\n".join(_sentence(rng, words, rng.randint(10, 24)) for _ in range(14)))
        made.append((f"report-{number}.pdf", bytes(pdf.output())))
    return made


# The job's progress messages, in order: the step that ends at each.
_STEPS = (
    ("Downloaded", "read the stored file"),
    ("Extracted", "extract and chunk"),
    ("Chunks written", "write chunks"),
    ("Embedded", "embed (gateway, mock)"),
)


def _step_seconds(job: dict[str, Any]) -> dict[str, float]:
    """Seconds per step of one job, from the times of its progress events (the last step ends at `finished_at`)."""
    times = [(event["message"] or "", datetime.datetime.fromisoformat(event["created_at"])) for event in job["events"]]
    started = next(at for message, at in times if message.startswith("Started"))
    spent: dict[str, float] = {}
    previous = started
    for prefix, name in _STEPS:
        ends = [at for message, at in times if message.startswith(prefix)]
        if not ends:
            continue
        spent[name] = (max(ends) - previous).total_seconds()
        previous = max(ends)
    spent["mark ready, finish"] = (datetime.datetime.fromisoformat(job["finished_at"]) - previous).total_seconds()
    return spent


def _throughput(api: Api) -> list[str]:
    rng = random.Random(SEED)
    documents = _generated_documents(rng, _vocabulary())
    base_id = api.create_base("Throughput", HASH_MODEL)
    started = time.perf_counter()
    for name, content in documents:
        api.upload(base_id, name, content)
    ready = api.wait_ready(base_id, len(documents))
    elapsed = time.perf_counter() - started
    pdf_pages = sum(document["pages"] or 0 for document in ready if document["filename"].endswith(".pdf"))
    chunks = sum(document["chunk_count"] for document in ready)
    megabytes = sum(len(content) for _, content in documents) / 1e6
    totals: dict[str, float] = defaultdict(float)
    for document in ready:
        response = api.client.get(f"/api/jobs/{document['job_id']}", headers=api.headers)
        response.raise_for_status()
        for name, seconds in _step_seconds(response.json()).items():
            totals[name] += seconds
    busy = sum(totals.values())
    return [
        f"## 2. Ingestion throughput: {len(documents)} documents ({len(documents) - THROUGHPUT_PDFS} Markdown/text, "
        f"{THROUGHPUT_PDFS} PDFs of {pdf_pages} pages; {megabytes:.2f} MB), default chunking, hashed-vector mock "
        "embedder",
        f"first upload to last `ready`: {elapsed:.1f} s; {len(documents) / elapsed:.2f} documents/s, "
        f"{chunks / elapsed:.0f} chunks/s ({chunks} chunks, sections and passages), "
        f"PDF pages {pdf_pages / elapsed:.1f}/s of the whole run",
        "share of the jobs' running time per step (from the jobs' progress events, summed over documents; "
        "time queued is not in it):",
        *(f"  {name}: {100 * seconds / busy:.1f}% ({seconds:.1f} s)" for name, seconds in totals.items()),
    ]


# --- 3. search latency at scale -------------------------------------------------------------------


def _unit_rows(rng: np.random.Generator, count: int) -> np.ndarray:
    rows = rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


async def _load_tenant(
    connection: asyncpg.Connection,
    tenant_id: UUID,
    base_id: UUID,
    passages: int,
    words: list[str],
    rng: np.random.Generator,
) -> None:
    documents = []
    for number in range(passages // PASSAGES_PER_DOCUMENT):
        digest = hashlib.sha256(f"{base_id}-{number}".encode()).hexdigest()
        documents.append(
            (
                uuid7(),
                tenant_id,
                base_id,
                f"loaded-{number}.txt",
                "text/plain",
                1000,
                digest,
                f"tenants/{tenant_id}/kb/{base_id}/{number}",
                "ready",
                PASSAGES_PER_DOCUMENT,
                HASH_MODEL,
            )
        )
    await connection.copy_records_to_table(
        "kb_documents",
        columns=[
            "id",
            "tenant_id",
            "base_id",
            "filename",
            "content_type",
            "size_bytes",
            "content_hash",
            "object_key",
            "status",
            "chunk_count",
            "embedding_model",
        ],
        records=documents,
    )
    vocabulary = np.array(words)
    for document in documents:
        vectors = _unit_rows(rng, PASSAGES_PER_DOCUMENT)
        texts = [" ".join(rng.choice(vocabulary, size=WORDS_PER_PASSAGE)) for _ in range(PASSAGES_PER_DOCUMENT)]
        await connection.copy_records_to_table(
            "kb_chunks",
            columns=[
                "id",
                "tenant_id",
                "base_id",
                "document_id",
                "level",
                "position",
                "start_offset",
                "end_offset",
                "text",
                "token_count",
                "content_hash",
                "embedding",
                "embedding_dim",
                "embedding_model",
                "language",
            ],
            records=[
                (
                    uuid7(),
                    tenant_id,
                    base_id,
                    document[0],
                    "passage",
                    position,
                    position * 400,
                    position * 400 + len(text),
                    text,
                    WORDS_PER_PASSAGE,
                    hashlib.sha256(text.encode()).hexdigest(),
                    vector,
                    DIMENSIONS,
                    HASH_MODEL,
                    "english",
                )
                for position, (text, vector) in enumerate(zip(texts, vectors, strict=True))
            ],
        )


async def _bulk_load(superuser_url: str, tenant_id: UUID, base_id: UUID, words: list[str]) -> str:
    rng = np.random.default_rng(SEED)
    connection = await asyncpg.connect(plain_url(superuser_url, DATABASE))
    try:
        await register_vector(connection)
        # COPY is binary, and asyncpg has no binary codec for regconfig: it is an OID on the wire.
        english = await connection.fetchval("SELECT 'english'::regconfig::oid")
        await connection.set_type_codec(
            "regconfig",
            encoder=lambda _: struct.pack("!I", english),
            decoder=lambda data: struct.unpack("!I", data)[0],
            schema="pg_catalog",
            format="binary",
        )
        index = f"idx_kb_chunks_hnsw_{DIMENSIONS}"
        # Built once after the load (as a restore would), from the migration's own definition.
        definition = await connection.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1", index)
        await connection.execute(f"DROP INDEX {index}")
        started = time.perf_counter()
        await _load_tenant(connection, tenant_id, base_id, SCALE_PASSAGES, words, rng)
        for number in range(OTHER_TENANTS):
            other, user, other_base = uuid7(), uuid7(), uuid7()
            await connection.execute(
                "INSERT INTO tenant_organizations (id, slug, name) VALUES ($1, $2, $2)", other, f"other-{number}"
            )
            await connection.execute(
                "INSERT INTO auth_users (id, tenant_id, email) VALUES ($1, $2, $3)",
                user,
                other,
                f"u@other-{number}.example.com",
            )
            await connection.execute(
                "INSERT INTO kb_bases (id, tenant_id, name, scope, owner_user_id, embedding_model) "
                "VALUES ($1, $2, 'Other', 'user', $3, $4)",
                other_base,
                other,
                user,
                HASH_MODEL,
            )
            await _load_tenant(connection, other, other_base, OTHER_PASSAGES, words, rng)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        await connection.execute("SET maintenance_work_mem = '1GB'")
        await connection.execute(definition)
        indexed = time.perf_counter() - started
        await connection.execute("VACUUM ANALYZE kb_chunks")
        await connection.execute("VACUUM ANALYZE kb_documents")
        total = await connection.fetchval("SELECT count(*) FROM kb_chunks")
        size = await connection.fetchval("SELECT pg_size_pretty(pg_relation_size($1))", index)
    finally:
        await connection.close()
    return f"{total} chunks in {OTHER_TENANTS + 1} tenants: COPY {loaded:.0f} s, HNSW build {indexed:.0f} s ({size})"


async def _explain(app_url: str, tenant_id: UUID, user_id: UUID, base_id: UUID, query: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the two statements of a hybrid search, as the app role in the tenant's session
    (RLS on), with the planner settings the search sets: the statements are captured as the search code runs them."""
    engine = create_engine(app_url, pool_size=1)
    captured: list[tuple[str, Any]] = []

    def capture(_connection: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "FROM kb_chunks" in statement and ("<=>" in statement or "ts_rank_cd" in statement):
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    lines = []
    try:
        async with tenant_session(create_session_maker(engine), tenant_id) as session:
            bases = await readable_bases(session, [base_id], Caller(user_id=user_id, is_admin=False))
            candidates = max(LIMIT * search.CANDIDATES_PER_RESULT, search.MIN_CANDIDATES)
            await search._tune(session, candidates)
            vector = _unit_rows(np.random.default_rng(SEED + 1), 1)[0].tolist()
            await search._nearest(session, bases, None, HASH_MODEL, vector, candidates)
            await search._by_words(session, bases, None, query, candidates)
            event.remove(engine.sync_engine, "before_cursor_execute", capture)
            connection = await session.connection()
            for leg, (statement, parameters) in zip(("vector leg", "text leg"), captured, strict=True):
                plan = await connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                lines += [f"EXPLAIN (ANALYZE, BUFFERS), {leg} of a hybrid search, app role, RLS on:", "```"]
                # The query vector's 384 numbers say nothing about the plan.
                lines += [re.sub(r"'\[[-0-9.e,]+\]'::vector", "'[query vector]'::vector", row[0]) for row in plan]
                lines.append("```")
            await session.rollback()
    finally:
        await engine.dispose()
    return lines


def _latency_at_scale(
    api: Api, superuser_url: str, app_url: str, hash_base: str, tenant_id: UUID, user_id: UUID
) -> list[str]:
    words = _vocabulary()
    base_id = api.create_base("Scale", HASH_MODEL)
    loaded = asyncio.run(_bulk_load(superuser_url, tenant_id, UUID(base_id), words))
    rng = random.Random(SEED)
    repeated = [" ".join(rng.sample(words, QUERY_WORDS)) for _ in range(WARM_UP)]
    lines = [
        f"## 3. Search latency: {loaded}; searched base {SCALE_PASSAGES} passages; limit {LIMIT}; "
        f"{TIMED} timed searches per row after {WARM_UP} warm-up, one at a time; hashed-vector mock embedder",
    ]
    for mode in MODES:
        for number in range(WARM_UP):
            api.search(base_id, repeated[number], mode)
        asked_before = []
        for number in range(TIMED):
            started = time.perf_counter()
            api.search(base_id, repeated[number % WARM_UP], mode)
            asked_before.append((time.perf_counter() - started) * 1000)
        new = []
        for _ in range(TIMED):
            query = " ".join(rng.sample(words, QUERY_WORDS))
            started = time.perf_counter()
            api.search(base_id, query, mode)
            new.append((time.perf_counter() - started) * 1000)
        lines.append(f"  {mode}, a query asked before: {_latency(asked_before)}; a new query: {_latency(new)}")
    round_trips = []
    for number in range(TIMED):
        started = time.perf_counter()
        api.client.post(
            f"{hash_base}/embeddings", json={"model": HASH_MODEL, "input": f"fresh query {number}"}
        ).raise_for_status()
        round_trips.append((time.perf_counter() - started) * 1000)
    lines.append(f"  the mock embedder's own round trip from this client, for scale: {_latency(round_trips)}")
    lines += asyncio.run(_explain(app_url, tenant_id, user_id, UUID(base_id), repeated[0]))
    return lines


def _bench(superuser_url: str, redis_url: str, scratch: Path, embedder_port: int, hash_base: str) -> list[str]:
    encryption_keys = new_key_entry()
    app_url, _, user = asyncio.run(
        prepare_priced_tenant(
            superuser_url,
            DATABASE,
            f"http://127.0.0.1:{embedder_port}/v1",
            encryption_keys,
            prices={MODEL: (20_000, 0)},
        )
    )
    asyncio.run(_add_channel(app_url, user.tenant_id, encryption_keys, hash_base, HASH_MODEL))
    jwt_keys = new_key_entry()
    principal = Principal(user_id=user.id, tenant_id=user.tenant_id, role=user.role, session_id=uuid7())
    token = issue_access_token(parse_keyring(jwt_keys, "LYSS_JWT_KEYS"), principal, ttl_seconds=7200)
    environment = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": app_url,
        "REDIS_URL": redis_url,
        "LYSS_ENCRYPTION_KEYS": encryption_keys,
        "LYSS_JWT_KEYS": jwt_keys,
        "LYSS_WORKERS": "1",
        "LYSS_EMBEDDED_WORKER": "true",
        "LYSS_DATA_DIR": str(scratch / "data"),
        "LYSS_STORAGE_DIR": str(scratch / "objects"),
    }
    port = _free_port()
    with (
        _serve(environment, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        api = Api(client, {"Authorization": f"Bearer {token}"})
        lines = _quality(api)
        lines += _throughput(api)
        lines += _latency_at_scale(api, superuser_url, app_url, hash_base, user.tenant_id, user.id)
    return lines


def main() -> None:
    load_before = os.getloadavg()
    embedder = Embedder(kept=KEPT_VECTORS)
    server = serve(embedder)
    try:
        with (
            _upstream() as hash_base,
            tempfile.TemporaryDirectory(prefix="lyss-knowledge-bench-") as scratch,
        ):
            postgres = EmbeddedPostgres(Path(scratch) / "postgres")
            redis_server = EmbeddedRedis(Path(scratch) / "redis")
            superuser_url = postgres.start()
            redis_url = redis_server.start()
            try:
                lines = _bench(superuser_url, redis_url, Path(scratch), server.server_address[1], hash_base)
            finally:
                redis_server.stop()
                postgres.stop()
        embedder.keep()
    finally:
        server.shutdown()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC · {os.cpu_count()} CPUs · Lyss {commit} (one "
        f"granian worker and the embedded job worker, embedded PostgreSQL and Redis) · load average before "
        f"{' '.join(f'{value:.2f}' for value in load_before)}, after "
        f"{' '.join(f'{value:.2f}' for value in os.getloadavg())} · Python {sys.version.split()[0]}"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
