"""Profiles: model.py (what one is), parse.py (its TOML, validated), find.py (the lookup)."""
