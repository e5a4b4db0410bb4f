"""Small rendering helpers shared by the pages (formatting, metric tables, status)."""
