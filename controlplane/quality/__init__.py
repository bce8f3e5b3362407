"""Model quality from logged predictions joined with feedback: classification metrics and drift."""
