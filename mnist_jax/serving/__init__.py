"""bin/serve: the draw-a-digit page and the JSON API over one trained model (see `app.create_app`)."""
