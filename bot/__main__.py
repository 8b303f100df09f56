"""`python -m bot` is the same as the `dreamcord` command."""

from bot.cli import main

raise SystemExit(main())
