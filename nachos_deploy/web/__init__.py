"""The HTTP edge: calls made from the host to the ingress, as a webhook provider (Meta, Slack) makes them.

Beside ``bus`` and ``docker`` in the layers: it may use ``io`` and ``core``, never the lifecycle above it."""
