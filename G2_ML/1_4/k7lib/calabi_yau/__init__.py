"""The Calabi-Yau link family: the Fermat quintic Q (`quintic`), the chart of its circle bundle
(`link_chart`), the G2 structures on the link and their learned fits (`link`), and a learned
Ricci-flat Kahler potential on Q with the link structure built on it (`ricci_flat`).

Dependencies point one way: quintic <- link_chart <- link <- ricci_flat.
"""
