"""Development tools shipped with modelroute: the fake provider and the demo."""
