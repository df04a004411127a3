"""HTTP: routes, parameter parsing and Amplitude-shaped responses. No rules live here."""
