// The template editor (templates_app): filled in by issue 14's work.
