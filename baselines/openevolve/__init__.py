"""OpenEvolve as a baseline: its configuration per problem, the endpoint that routes its LLM calls
through Engram's model layer, and the method that drives it."""
