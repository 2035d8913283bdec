"""The web console under `/ui`: server-rendered pages, inline SVG and a little vanilla
JavaScript served from this package (see docs/console.md)."""
