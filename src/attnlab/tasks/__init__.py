"""Recipes: a task per job (data + model + loss + metric) and its YAML defaults."""
