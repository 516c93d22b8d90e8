"""Rule-based Sentinel-2 cloud / shadow / water / snow classes from reflectances.

Input bands in this order: B02 (blue), B03 (green), B04 (red), B08 (NIR), B11 (SWIR1),
reflectance x 10000. Classes: 0 clear, 1 cloud, 2 cloud shadow, 3 water, 4 snow.
"""

import numpy as np


def cloudmask(img, cloud_blue=2000, cloud_bright=2200, snow_ndsi=0.4, water_ndwi=0.1,
              shadow_nir=1200, shadow_bright=800):
    """uint8 class per pixel (the thresholds are reflectance x 10000 or index values)."""
    blue, green, red, nir, swir = [img[i].astype(np.float32) for i in range(5)]
    bright = (blue + green + red) / 3
    with np.errstate(divide="ignore", invalid="ignore"):
        ndsi = np.where(green + swir > 0, (green - swir) / (green + swir), 0)
        ndwi = np.where(green + nir > 0, (green - nir) / (green + nir), 0)
    snow = (ndsi > snow_ndsi) & (green > 1500) & (nir > 1100)
    cloud = (blue > cloud_blue) & (bright > cloud_bright) & ~snow
    water = (ndwi > water_ndwi) & (nir < 1500) & ~cloud & ~snow
    shadow = (nir < shadow_nir) & (bright < shadow_bright) & ~water & ~cloud & ~snow
    shadow &= bright > 0  # nodata is not shadow
    classes = np.zeros(blue.shape, dtype=np.uint8)
    classes[cloud] = 1
    classes[shadow] = 2
    classes[water] = 3
    classes[snow] = 4
    return classes
