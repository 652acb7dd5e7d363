"""Reading and writing SIIM-format data: DICOM images, RLE label CSVs, splits, synthetic sets."""
