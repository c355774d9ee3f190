"""A local AWS Lambda: the Invoke and code APIs, the Runtime API each instance polls, and its sandboxes
(cgroups).  A server a user starts (`fnbench lambda serve`); it never imports orchestrator/."""
