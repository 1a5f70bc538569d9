"""nbseg."""
