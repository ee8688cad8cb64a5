"""The assistant: answers questions from the documentation (knowledge/ and the README, indexed with SQLite FTS5)
and from the store's records (the decisions the mesh made and why), each fact cited; and an MCP server that
gives AI clients the same reads, plus the dashboard's controls behind its token.

It reads; it never trades. A question asking it to act gets the command to run."""
