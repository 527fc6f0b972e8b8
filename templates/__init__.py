"""Ready run configs (YAML) and their small data files; see README.md. No code lives here."""
