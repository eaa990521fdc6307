import numpy as np

from robustbench_dice.errors import ConfigError
from robustbench_dice.registry import register_topology


@register_topology("hypercube")
def hypercube(nodes: int, seed: int) -> np.ndarray:
    """Hypercube: node i talks to i XOR 2^m for every 2^m < N (N a power of two); an example for the docs."""
    if nodes & (nodes - 1):
        raise ConfigError(f"topology 'hypercube' needs a power-of-two number of nodes, got {nodes}")
    node = np.arange(nodes)
    adjacency = np.zeros((nodes, nodes), dtype=bool)  # [j, k]: node j receives node k's message
    for bit in range(nodes.bit_length() - 1):
        adjacency[node, node ^ (1 << bit)] = True
    return adjacency
