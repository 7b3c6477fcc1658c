"""Analytics: delivery figures and rates per period, provider, queue, type and tag.

``queries`` counts the live tables, ``rollups`` keeps closed days summed in
``email_analytics_daily``, ``service`` assembles the API's ``EmailAnalytics`` and
``reports`` streams the same figures as CSV or JSON.
"""
