"""World-model behaviours, measured: interaction probes, action conditioning, persistence, generalisation."""
