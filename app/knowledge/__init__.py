"""Knowledge bases: documents uploaded to the object store, chunked, embedded and searched."""
