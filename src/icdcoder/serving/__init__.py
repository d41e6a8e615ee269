"""The code-suggestion service: REST API, micro-batching and the coder web page (`icdcoder serve`)."""
