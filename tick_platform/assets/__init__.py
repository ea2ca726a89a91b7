"""The platform's assets: streams (observed), dimensions and facts."""
