"""``panel serve app/dashboard.py [--port 5006 --prefix /eox ...]``: the dashboard with
Panel's server and flags; tiles from ``EOX_SERVICE_URL`` or a tile service started in the
background (see ``app.panelserve``). ``eoexplorer serve`` serves the same page on one port.
"""

from app.panelserve import served_app

served_app().servable(title="EO Explorer")
