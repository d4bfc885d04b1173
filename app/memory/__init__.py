"""Long-term memory: facts about each user, extracted from chats, searched by meaning and by words."""
