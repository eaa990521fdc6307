"""Built-in defense plugins: one module per defense, each registered with ``@register_defense``."""
