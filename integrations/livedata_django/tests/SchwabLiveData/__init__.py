"""Thor's app of the seed design, with the seed's ``SchwabToken`` model exactly as designed."""
