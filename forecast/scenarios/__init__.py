"""Scenario mining for evaluation: tags of what happens in a scene (``tags``), the tag table beside the
store (``table``), and suites of fixed cases with expectations (``suites``)."""
