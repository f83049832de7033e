"""Models: the chat models agents and baselines talk to (litellm providers, the scripted model),
how a call is made, retried and billed, and how recorded calls are played back."""
