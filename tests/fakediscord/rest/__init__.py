"""The REST API by resource; each module adds its routes under ``/api/v10``.

``front_door`` is the middleware every API request passes; ``login`` what discord.py asks at
login; ``commands`` application commands; ``channels`` channels and their messages;
``interactions`` interaction callbacks and webhook follow-ups; ``guilds`` the guild, its roles
and members.
"""
