"""The browser front door at `/`: one server-rendered page that calls the agents API from the browser."""
