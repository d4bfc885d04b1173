"""Knowledge bases: documents, ingestion, chunks, hybrid search."""
