"""Conversations, messages, feedback and per-user memory (the conversations issue fills this app)."""
