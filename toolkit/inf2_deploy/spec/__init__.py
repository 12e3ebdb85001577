"""What to deploy and whether it fits: the spec, its fields and checks, the inf2 catalog, the Neuron planner.

Laptop side; pure: no AWS call, no torch.
"""
