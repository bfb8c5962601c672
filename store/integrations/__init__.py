"""turnstore for agent runtimes that bring their own memory protocol.

- ``store.integrations.openai_agents``: ``TurnstoreSession``, a ``Session`` of the OpenAI
  Agents SDK (``pip install 'turnstore[agents]'``).
"""
