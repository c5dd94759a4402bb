"""Node agent process: materialises pools, keeps the image cache, reports observed state.

Never touches the store.
"""
