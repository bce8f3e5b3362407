"""A real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium: the one way tests
look at a page as a person would (the HTML report, the console)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver, always quit afterwards. Selenium Manager is bypassed: the system
    browser and driver are used (nothing is downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver_path:
        raise RuntimeError("Debian's chromium and chromium-driver are needed (scripts/test.sh installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, path: str | Path) -> Path:
    """The whole page, not only the window."""
    path = Path(path)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(driver.get_window_size()["width"], max(600, min(int(height), 8000)))
    driver.save_screenshot(str(path))
    return path
