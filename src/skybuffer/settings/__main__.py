"""``python -m skybuffer.settings > docs/CONFIGURATION.md``."""

from skybuffer.settings.reference import reference_markdown

print(reference_markdown())
