"""Built-in attack plugins: one module per attack, each registered with ``@register_attack``."""
