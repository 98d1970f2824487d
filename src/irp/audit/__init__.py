"""Audit the proxy label with people: a stratified blind sample (sample), verdict storage (store), a local
annotation page (web), and design-based estimates of what the tap means (estimate, plots)."""
